"""Hand-built VLM inputs have the processors' layout: token counts equal the models' feature counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surefast.errors import SurefastError
from surefast.models.tiny import tiny_model, tiny_tokenizer
from surefast.speculate.vlm import prepare_inputs
from surefast.speculate.vlm.layout import CLIP_MEAN, CLIP_STD, llava_images, qwen_patchify

from .vlm_helpers import QUESTION, image, target, video


@pytest.mark.parametrize("size", [(40, 60), (60, 40), (28, 28), (100, 30), (29, 200)])
def test_vlm_llava_image_token_count_matches_model_features(size):
    model = target("llava_onevision")
    tensors, (count,) = llava_images([image(*size)], model.config)
    with torch.no_grad():
        feats = model.model.get_image_features(tensors["pixel_values"], tensors["image_sizes"]).pooler_output
    assert count == feats[0].shape[0]


def test_vlm_llava_video_token_count_matches_model_features():
    model = target("llava_onevision")
    inp = prepare_inputs(tiny_tokenizer(), model, QUESTION, video=video(frames=3))
    with torch.no_grad():
        feats = model.model.get_video_features(inp.vision["pixel_values_videos"]).pooler_output
    assert inp.n_visual == feats.shape[1] == 3 + 1


def test_vlm_qwen_patchify_matches_the_image_processor():
    from transformers import Qwen2VLImageProcessorPil

    img = image(56, 84)
    ref = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2, do_resize=False)(
        images=[img], return_tensors="pt"
    )
    x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    pixels, grid = qwen_patchify(x, temporal=2, patch=14, merge=2)
    assert grid.tolist() == ref["image_grid_thw"][0].tolist() == [1, 4, 6]
    torch.testing.assert_close(pixels, ref["pixel_values"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_5_vl"])
def test_vlm_inputs_layout(arch):
    model = target(arch)
    inp = prepare_inputs(tiny_tokenizer(), model, QUESTION, images=[image(70, 100)], video=video())
    ids = inp.input_ids[0].tolist()
    image_id, video_id = inp.visual_tokens
    assert ids.count(image_id) + ids.count(video_id) == inp.n_visual
    first = ids.index(image_id)
    assert ids[first : first + ids.count(image_id)] == [image_id] * ids.count(image_id)  # one contiguous run
    if arch == "qwen2_5_vl":
        assert inp.vision["mm_token_type_ids"][0].tolist() == [
            1 if t == image_id else 2 if t == video_id else 0 for t in ids
        ]
        tok = tiny_tokenizer()
        assert tok.convert_ids_to_tokens(ids[first - 1]) == "<|vision_start|>"
    with torch.no_grad():  # the model accepts them (it checks features == placeholders)
        model(**inp.generate_kwargs())


def test_vlm_inputs_errors():
    tok = tiny_tokenizer()
    with pytest.raises(SurefastError, match="at least one image"):
        prepare_inputs(tok, target("qwen2_5_vl"), QUESTION)
    with pytest.raises(SurefastError, match="not a supported vision-language model"):
        prepare_inputs(tok, tiny_model("llama", 0), QUESTION, images=[image()])
    with pytest.raises(SurefastError, match="more visual placeholders"):
        prepare_inputs(tok, target("llava_onevision"), "<image> twice", images=[image()])
