"""The processor path: transformers' own processors (built in memory) give the same inputs as our hand-built layout.

The real processors cannot be constructed on this machine as they are (their video processors need
torchvision), so the class check of ``ProcessorMixin`` is bypassed here and ``video_processor=None``:
the image path of the processors is exercised for real.
"""

from __future__ import annotations

import pytest
import torch

from surefast.models.tiny import tiny_tokenizer
from surefast.speculate import POLICY_CONFIGS
from surefast.speculate.vlm import PruneConfig, prepare_inputs, vlm_decoder
from surefast.speculate.vlm.layout import TinyLayoutConfig

from .vlm_helpers import QUESTION, VLM_ARCHS, draft, image, target

_ITEM = "{% for c in m['content'] %}{% if c['type'] == 'image' %}IMG{% elif c['type'] == 'video' %}VID{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n" + _ITEM + "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_PLACEHOLDERS = {
    "qwen2_5_vl": ("<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>"),
    "llava_onevision": ("<image>\n", "<video>\n"),
}


@pytest.fixture
def processor(monkeypatch):
    import transformers
    import transformers.processing_utils as pu

    monkeypatch.setattr(pu.ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None)

    def make(arch: str):
        tok = tiny_tokenizer()
        img, vid = _PLACEHOLDERS[arch]
        template = _TEMPLATE.replace("IMG", img).replace("VID", vid)
        config = target(arch).config
        if arch == "qwen2_5_vl":
            layout, vision = TinyLayoutConfig(), config.vision_config
            ip = transformers.Qwen2VLImageProcessorPil(
                min_pixels=layout.qwen_min_pixels,
                max_pixels=layout.qwen_max_pixels,
                patch_size=vision.patch_size,
                merge_size=vision.spatial_merge_size,
                temporal_patch_size=vision.temporal_patch_size,
            )
            return transformers.Qwen2_5_VLProcessor(
                image_processor=ip, tokenizer=tok, video_processor=None, chat_template=template
            )
        size = config.vision_config.image_size
        ip = transformers.LlavaOnevisionImageProcessorPil(
            size={"height": size, "width": size}, do_pad=True, image_grid_pinpoints=config.image_grid_pinpoints
        )
        side = size // config.vision_config.patch_size
        return transformers.LlavaOnevisionProcessor(
            image_processor=ip,
            tokenizer=tok,
            video_processor=None,
            num_image_tokens=side * side,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            chat_template=template,
        )

    return make


@pytest.mark.parametrize("size", [(70, 100), (100, 30)])
@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_processor_path_equals_hand_built_layout(arch, size, processor):
    model = target(arch)
    via_processor = prepare_inputs(processor(arch), model, QUESTION, images=[image(*size)])
    by_hand = prepare_inputs(tiny_tokenizer(), model, QUESTION, images=[image(*size)])
    assert via_processor.input_ids.tolist() == by_hand.input_ids.tolist()
    assert via_processor.n_visual == by_hand.n_visual > 0
    for key, value in by_hand.vision.items():
        torch.testing.assert_close(via_processor.vision[key], value, msg=key)


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_processor_path_is_lossless(arch, processor):
    model = target(arch)
    inp = prepare_inputs(processor(arch), model, QUESTION, images=[image(70, 100)])
    with torch.no_grad():
        ref = model.generate(
            **inp.generate_kwargs(), max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, inp.input_ids.shape[1] :].tolist()
    decoder = vlm_decoder(model, draft(arch), inp, method=list(POLICY_CONFIGS)[-1], prune=PruneConfig(0.5))
    assert decoder.generate(inp.input_ids, 16, eos_token_id=None).tokens == ref
