"""Pretrained image backbones (model=hf_vision, model=timm): the checkpoint's preprocessing, uint8 and float
images, augmentation in training mode only, every adapter method and LoRA on both naming schemes, prefix
tuning on their attentions, parameter parity with AdapterHub and peft, one-line errors, whole class-IL runs."""

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cl_adapters import CONFIG_DIR
from cl_adapters.adapters import AdapterConfig, LoraConfig, PrefixConfig, Route, inject_adapters
from cl_adapters.errors import UserError
from cl_adapters.models import AdaptedModel, HFVision, TimmBackbone
from cl_adapters.models.images import ImagePreprocess, crop_boxes, resized_crops
from cl_adapters.models.timm_backbone import current_name

KINDS = ("hf", "timm")
ADAPTERS = sorted(p.stem for p in (Path(CONFIG_DIR) / "adapter").glob("*.yaml"))


@pytest.fixture(scope="module")
def backbones(tiny_vit, tiny_timm):
    return {"hf": HFVision((3, 32, 32), name_or_path=tiny_vit), "timm": TimmBackbone((3, 32, 32), **tiny_timm)}


def images(n=4, size=40, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_preprocessing_is_the_checkpoints(backbones):
    """Size, interpolation, mean and std as the checkpoint gives them: the HF folder's image processor config;
    timm's data config for the model at img_size=32 (its ViT's mean and std, 0.5, not ImageNet's)."""
    hf, timm = backbones["hf"].preprocess, backbones["timm"].preprocess
    assert (hf.size, hf.interpolation) == ((32, 32), "bicubic")
    torch.testing.assert_close(hf.mean.flatten(), torch.tensor([0.2, 0.3, 0.4]))
    torch.testing.assert_close(hf.std.flatten(), torch.tensor([0.5, 0.6, 0.7]))
    assert (timm.size, timm.interpolation) == ((32, 32), "bicubic")
    assert timm.mean.flatten().tolist() == timm.std.flatten().tolist() == [0.5] * 3
    for kind, family in (("hf", "vit"), ("timm", "timm_vit")):
        b = backbones[kind]
        assert (b.family, b.pretrained, b.inputs, b.out_features) == (family, True, "float", 32)


@pytest.mark.parametrize("kind", KINDS)
def test_uint8_and_float_images_give_the_same_eval_features(backbones, kind):
    """0..255 uint8 or 0..1 float, any size, grey or RGB: the same features in eval mode, on the batch's device."""
    model, x = backbones[kind].eval(), images()
    with torch.no_grad():
        features = model(x)
        assert features.shape == (4, 32) and torch.equal(features, model(x.float() / 255))
        grey = x[:, :1]
        assert torch.equal(model(grey), model(grey.expand(-1, 3, -1, -1)))
        assert not torch.allclose(model(images(size=24)), features)


@pytest.mark.parametrize("kind", KINDS)
def test_augmentation_only_in_training_mode(backbones, kind, tiny_vit, tiny_timm):
    model, x = copy.deepcopy(backbones[kind]), images()
    with torch.no_grad():
        still = model.eval()(x)
        assert torch.equal(model(x), still)
        model.train()
        assert not torch.allclose(model(x), model(x))  # a new crop and flip per image, per forward
        plain = HFVision(name_or_path=tiny_vit, augment=False) if kind == "hf" else TimmBackbone(**tiny_timm, augment=False)
        torch.testing.assert_close(plain.train()(x), still)  # no augmentation (and no dropout in these)


def test_the_crops_are_torchvisions_random_resized_crops():
    """Boxes inside the image with PILOT's area and aspect ranges; a box maps onto the output exactly (a full
    box is a bilinear resize, flip mirrors it, a box of the output's size is that crop)."""
    torch.manual_seed(0)
    top, left, h, w = crop_boxes(4000, 32, 48, "cpu").unbind(1)
    assert top.min() >= 0 and left.min() >= 0 and (top + h).max() <= 32 and (left + w).max() <= 48
    area = h * w / (32 * 48)
    assert 0.04 < area.min() < 0.1 and area.max() > 0.8 and 0.65 < (w / h).min() and (w / h).max() < 1.4
    x = torch.rand(3, 3, 20, 24)
    full, no, yes = torch.tensor([[0, 0, 20, 24]] * 3), torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(resized_crops(x, full, no, (40, 48)), F.interpolate(x, (40, 48), mode="bilinear"))
    torch.testing.assert_close(resized_crops(x, full, yes, (20, 24)), x.flip(-1))
    torch.testing.assert_close(resized_crops(x, torch.tensor([[2, 3, 10, 12]] * 3), no, (10, 12)), x[..., 2:12, 3:15])


def test_crops_on_a_cpu_resample_as_pil_resizes_pilots_and_normalising_first_changes_nothing():
    """On a CPU a crop is resized as PIL resizes PILOT's (``RandomResizedCrop`` on a PIL image: crop, then an
    antialiased bilinear resize), up or down, within PIL's uint8 rounding; in training the preprocessing
    normalises before resampling, which gives the values normalising after would."""
    import numpy as np
    from PIL import Image

    from cl_adapters.models.images import ImagePreprocess, random_resized_crop_flip

    g = torch.Generator().manual_seed(0)
    for shape, size, boxes in (((40, 48), (32, 36), [[3, 5, 20, 30], [0, 2, 40, 44]]),  # crop by crop: up; down
                               ((10, 12), (40, 48), [[2, 3, 5, 9], [0, 0, 10, 12]])):  # small: matrix products
        x = torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8, generator=g)
        boxes, flip = torch.tensor(boxes), torch.tensor([False, True])
        out = resized_crops(x.float() / 255, boxes, flip, size)
        for i, (top, left, h, w) in enumerate(boxes.tolist()):
            image = Image.fromarray(x[i].permute(1, 2, 0).numpy()).crop((left, top, left + w, top + h))
            image = image.resize(size[::-1], Image.BILINEAR)
            image = image.transpose(Image.FLIP_LEFT_RIGHT) if flip[i] else image
            expected = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255
            torch.testing.assert_close(out[i], expected, atol=1.01 / 255, rtol=0)
    preprocess = ImagePreprocess((24, 24), [0.2, 0.3, 0.4], [0.5, 0.6, 0.7]).train()
    for x in (torch.randint(0, 256, (4, 3, 10, 12), dtype=torch.uint8), torch.rand(4, 3, 40, 48)):  # both ways
        torch.manual_seed(1)
        first = preprocess(x)
        torch.manual_seed(1)
        pixels = x.float() / 255 if x.dtype == torch.uint8 else x
        torch.testing.assert_close(first, (random_resized_crop_flip(pixels, (24, 24)) - preprocess.mean) / preprocess.std)


def _hf_folder(tmp_path, kind: str) -> str:
    """A tiny random DeiT, BEiT, DINOv2 or CLIP (text + vision) saved with an image processor."""
    from transformers import (AutoModel, BeitConfig, CLIPConfig, CLIPImageProcessor, CLIPModel, DeiTConfig, Dinov2Config,
                              ViTImageProcessor)

    small = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    path = tmp_path / kind
    if kind == "clip":
        text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        CLIPModel(CLIPConfig(text_config=text, vision_config=small, projection_dim=16)).save_pretrained(path)
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    else:
        config = {"deit": DeiTConfig, "beit": BeitConfig, "dinov2": Dinov2Config}[kind](**small)
        AutoModel.from_config(config).save_pretrained(path)
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


PER_LAYER = {  # what each preset wraps in every layer (HF ViT, DeiT, BEiT: BERT's names)
    "vit": {"houlsby": ["attention.output.dense", "output.dense"], "pfeiffer": ["output.dense"],
            "parallel": ["output.dense"], "lora": ["attention.attention.query", "attention.attention.value"],
            "prefix": ["attention.attention"]},
    "dinov2": {"houlsby": ["attention.output.dense", "mlp.fc2"], "pfeiffer": ["mlp.fc2"], "parallel": ["mlp"],
               "lora": ["attention.attention.query", "attention.attention.value"], "prefix": ["attention.attention"]},
    "clip_vision_model": {"houlsby": ["self_attn.out_proj", "mlp.fc2"], "pfeiffer": ["mlp.fc2"], "parallel": ["mlp"],
                          "lora": ["self_attn.q_proj", "self_attn.v_proj"], "prefix": ["self_attn"]},
    "timm_vit": {"houlsby": ["attn.proj", "mlp.fc2"], "pfeiffer": ["mlp.fc2"], "parallel": ["mlp"], "lora": ["attn.qkv"],
                 "prefix": ["attn"]},
}
PER_LAYER["deit"] = PER_LAYER["beit"] = PER_LAYER["vit"]
LAYERS = {"vit": "model.encoder.layer", "deit": "model.encoder.layer", "beit": "model.encoder.layer",
          "dinov2": "model.encoder.layer", "clip_vision_model": "model.vision_model.encoder.layers", "timm_vit": "model.blocks"}


@pytest.mark.parametrize("kind", ["vit", "timm", "deit", "beit", "dinov2", "clip"])
def test_presets_wrap_the_intended_modules(backbones, tmp_path, kind):
    """Every kind's preset on every family (BEiT: no prefix, its relative position bias has no room); a CLIP
    checkpoint loads its vision tower."""
    backbone = backbones.get({"vit": "hf"}.get(kind, kind)) or HFVision(name_or_path=_hf_folder(tmp_path, kind))
    family = backbone.family
    assert family == {"timm": "timm_vit", "clip": "clip_vision_model"}.get(kind, kind)
    with torch.no_grad():
        assert backbone.eval()(images()).shape == (4, 32)
    for placement in ("houlsby", "pfeiffer", "parallel"):
        layers = inject_adapters(copy.deepcopy(backbone), AdapterConfig(placement=placement, r=4))
        assert list(layers) == [f"{LAYERS[family]}.{i}.{m}" for i in range(2) for m in PER_LAYER[family][placement]]
    lora = AdaptedModel(copy.deepcopy(backbone), LoraConfig(r=2))
    lora.add_task(0, 2)
    assert sorted(lora.adapters.layer_names) == [f"{LAYERS[family]}.{i}.{m}" for i in range(2) for m in PER_LAYER[family]["lora"]]
    if family == "beit":
        with pytest.raises(UserError, match="no prefix preset for backbone family 'beit'"):
            PrefixConfig().attach(copy.deepcopy(backbone))
    else:
        prefixes = PrefixConfig(prefix_length=3, bottleneck=8).attach(copy.deepcopy(backbone))
        assert prefixes.layer_names == [f"{LAYERS[family]}.{i}.{m}" for i in range(2) for m in PER_LAYER[family]["prefix"]]


def _method(name: str):
    return LoraConfig(r=4) if name == "lora_per_task" else instantiate(OmegaConf.load(f"{CONFIG_DIR}/adapter/{name}.yaml"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_every_adapter_method_trains_only_its_own_parameters(backbones, kind, adapter):
    """Each conf/adapter/*.yaml on both backbones: after a training step on task 1 (augmented, a mixed batch
    would route task 0's samples through task 0's frozen parts), only task 1's adapter and head moved."""
    torch.manual_seed(0)
    model = AdaptedModel(copy.deepcopy(backbones[kind]), _method(adapter)).train()
    model.add_task(0, 2), model.add_task(1, 2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.task_parameters(1)) and any(not n.startswith("heads.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    F.cross_entropy(model(images(6), 1), torch.tensor([0, 1] * 3)).backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= trainable and any(not n.startswith("heads.") for n in moved)


@pytest.mark.parametrize("kind", KINDS)
def test_each_sample_attends_to_its_own_tasks_prefixes(backbones, kind):
    """HF ViT's self-attention (no mask argument) and timm's fused-qkv Attention take prefixes: a mixed batch
    is each task's own per sample, a task without a prefix is the bare model (its rows computed again),
    and afterwards no rows, hook or placeholder is left."""
    torch.manual_seed(0)
    model, x = copy.deepcopy(backbones[kind]).eval(), images()
    with torch.no_grad():
        bare = model(x)
        hooks = {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules()}
        prefixes = PrefixConfig(prefix_length=5, bottleneck=16).attach(model)
        prefixes.add("0"), prefixes.add("1")
        assert torch.equal(model(x), bare)
        alone = {}
        for key in ("0", "1"):
            with prefixes.routed(Route.whole(key)):
                alone[key] = model(x)
            assert not torch.allclose(alone[key], bare, atol=1e-4)
        with prefixes.routed(Route.from_labels(torch.tensor([0, 1, 0, 2]))):  # task 2 has no prefix
            mixed = model(x)
    torch.testing.assert_close(mixed[[0, 2]], alone["0"][[0, 2]])
    torch.testing.assert_close(mixed[1], alone["1"][1])
    torch.testing.assert_close(mixed[3], bare[3])
    assert torch.equal(model(x), bare)
    assert {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules() if n in hooks} == hooks
    with prefixes.routed(Route.whole("1")):  # the prefixes train through the frozen base
        model(x).square().sum().backward()
    assert all(p.grad is None for p in prefixes.parameters("0"))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prefixes.parameters("1"))


@pytest.mark.parametrize("placement,hub_config,count", [
    ("pfeiffer", "SeqBnConfig", 324), ("houlsby", "DoubleSeqBnConfig", 648), ("parallel", "ParBnConfig", 324)])
def test_bottleneck_parameters_equal_adapterhubs_on_hf_vit(backbones, tiny_vit, placement, hub_config, count):
    """AdapterHub's ViT with reduction factor 16 (hidden 32: r=2): 2 layers x (32*2 + 2 + 2*32 + 32) per site."""
    adapters = pytest.importorskip("adapters")
    from transformers import AutoModel

    hub = AutoModel.from_pretrained(tiny_vit)
    adapters.init(hub)
    hub.add_adapter("task", config=getattr(adapters, hub_config)(reduction_factor=16))
    hub.train_adapter("task")
    theirs = sum(p.numel() for p in hub.parameters() if p.requires_grad)
    model = AdaptedModel(copy.deepcopy(backbones["hf"]), AdapterConfig(placement=placement, r=2))
    model.add_task(0, 2)
    ours = sum(p.numel() for n, p in model.task_parameters(0).items() if not n.startswith("heads."))
    assert ours == theirs == count


@pytest.mark.parametrize("kind,count", [("hf", 2 * 2 * 4 * (32 + 32)), ("timm", 2 * 4 * (32 + 3 * 32))])
def test_lora_parameters_equal_pefts(backbones, kind, count):
    """peft on the same targets: query and value in HF ViT's 2 layers; timm's fused qkv (d -> 3d)."""
    from peft import get_peft_model

    cfg = LoraConfig(r=4)
    model = AdaptedModel(copy.deepcopy(backbones[kind]), cfg)
    model.add_task(0, 2)
    theirs, _ = get_peft_model(copy.deepcopy(backbones[kind]), cfg.to_peft(backbones[kind])).get_nb_trainable_parameters()
    assert sum(p.numel() for p in model.adapters.parameters("0")) == theirs == count


def test_timm_names_old_and_unknown(capsys):
    """PILOT's name (timm 0.6) loads as timm 1.x's, and says so; an unknown name is one line."""
    assert current_name("vit_base_patch16_224_in21k") == "vit_base_patch16_224.augreg_in21k"
    assert "calls it vit_base_patch16_224.augreg_in21k" in capsys.readouterr().out
    assert current_name("vit_base_patch16_224.augreg_in21k") == "vit_base_patch16_224.augreg_in21k"
    with pytest.raises(UserError, match=r"model.name='vit_nope' is not a timm .* model"):
        TimmBackbone(name="vit_nope")


def test_one_line_errors(tmp_path, tiny_bert, tiny_vit, tiny_timm):
    import shutil

    (tmp_path / "no_processor").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_vit) / name, tmp_path / "no_processor" / name)
    cases = [
        (lambda: HFVision(name_or_path=str(tmp_path / "nope")), r"model.name_or_path=.*nope' could not be loaded"),
        (lambda: HFVision(name_or_path=str(tmp_path / "no_processor")), r"could not be loaded: .*preprocessor_config.json"),
        (lambda: HFVision(name_or_path=tiny_bert), r"is a bert checkpoint, not an image transformer.*model=hf_encoder"),
        (lambda: HFVision(name_or_path=tiny_vit, pooling="max"), r"model.pooling must be one of \('cls', 'mean'\)"),
        (lambda: HFVision((2, 32, 32), name_or_path=tiny_vit), r"model=hf_vision takes \(3, H, W\) images .* \(2, 32, 32\)"),
        (lambda: TimmBackbone(**{**tiny_timm, "checkpoint_path": f"{tiny_vit}/config.json"}), r"must be a .safetensors file"),
        (lambda: TimmBackbone(**{**tiny_timm, "checkpoint_path": f"{tiny_vit}/model.safetensors"}), r"does not fit the model"),
        (lambda: TimmBackbone(**{**tiny_timm, "model_kwargs": {"no_such_argument": 1}}), r"model.model_kwargs="),
        (lambda: TimmBackbone(**{**tiny_timm, "model_kwargs": {**tiny_timm["model_kwargs"], "num_heads": 3}}),
         r"model.model_kwargs=.*divisible"),
        (lambda: TimmBackbone(**{**tiny_timm, "dropout": 1.0}), r"model.dropout must be in \[0, 1\)"),
        (lambda: TimmBackbone(name="vit_tiny_patch16_224", model_kwargs=tiny_timm["model_kwargs"]),  # no network here
         r"pretrained weights could not be loaded .* give model.checkpoint_path"),
    ]
    for make, message in cases:
        with pytest.raises(UserError, match=message) as error:
            make()
        assert "\n" not in str(error.value)


def test_dropout_sets_every_dropout_probability(tiny_vit, tiny_timm):
    hf = HFVision(name_or_path=tiny_vit, dropout=0.3)
    assert hf.model.config.hidden_dropout_prob == hf.model.config.attention_probs_dropout_prob == 0.3
    timm = TimmBackbone(**tiny_timm, dropout=0.3)
    assert {m.p for m in timm.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}


@pytest.mark.parametrize("kind", KINDS)
def test_a_quantized_base_is_frozen_and_close(backbones, tiny_vit, tiny_timm, kind):
    pytest.importorskip("bitsandbytes")
    quantized = HFVision(name_or_path=tiny_vit, quantize="int8") if kind == "hf" else TimmBackbone(**tiny_timm, quantize="int8")
    kinds = {type(m).__name__ for m in quantized.model.modules() if isinstance(m, torch.nn.Linear)}
    assert kinds == {"Linear8bitLt"}
    assert not any(p.requires_grad for p in quantized.parameters())
    with torch.no_grad():
        assert F.cosine_similarity(quantized.eval()(images()), backbones[kind].eval()(images())).min() > 0.9


STREAM = '''import torch
from cl_adapters.streams import task_stream


def tiny_images(n_tasks: int = 2, n: int = 24, seed: int = 0, scenario: str = "class_il"):
    """Float images in [0, 1], (N, 3, 32, 32): in each task, class 1 has a bright top-left quarter."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for t in range(n_tasks):
        for split, size in ((train, n), (test, n // 2)):
            y = torch.arange(size) % 2
            x = torch.rand(size, 3, 32, 32, generator=g) * 0.5
            x[y == 1, t % 3, :16, :16] += 0.5
            split.append((x, y))
    return task_stream(train, test, n_classes=[2] * n_tasks, seed=seed, scenario=scenario)
'''


@pytest.fixture(scope="module")
def vision_streams(tmp_path_factory):
    """``vision_streams.tiny_images`` importable, as a user's own stream module would be."""
    folder = tmp_path_factory.mktemp("streams")
    (folder / "vision_streams.py").write_text(STREAM)
    sys.path.insert(0, str(folder))
    yield "vision_streams.tiny_images"
    sys.path.remove(str(folder))
    sys.modules.pop("vision_streams", None)


def _model_overrides(kind, tiny_vit, tiny_timm) -> list[str]:
    if kind == "hf":
        return ["model=hf_vision", f"model.name_or_path={tiny_vit}"]
    kwargs = ",".join(f"{k}:{v}" for k, v in tiny_timm["model_kwargs"].items())
    return ["model=timm", f"model.name={tiny_timm['name']}", "model.pretrained=false",
            f"model.checkpoint_path={tiny_timm['checkpoint_path']}", f"model.model_kwargs={{{kwargs}}}"]


STRATEGIES = {
    "ncm": ["strategy=ncm"],
    "adapter-learned": ["strategy=adapter", "router=learned"],
    "full_ft": ["strategy=full_ft"],
    "lora": ["strategy=lora"],
    "lora_per_task-prototype": ["strategy=lora_per_task", "router=prototype"],
}
SLOW = {("adapter-learned", "timm"), ("full_ft", "hf"), ("lora", "hf")}  # each strategy stays on one backbone


@pytest.mark.parametrize("strategy,kind", [
    pytest.param(s, k, id=f"{s}-{k}", marks=[pytest.mark.slow] if (s, k) in SLOW else []) for s in STRATEGIES for k in KINDS])
def test_a_class_il_run(make_cfg, tmp_path, vision_streams, tiny_vit, tiny_timm, kind, strategy):
    """A whole class-IL run through each backbone, offline: every task trained and evaluated."""
    from cl_adapters.runs.run import run

    cfg = make_cfg(*_model_overrides(kind, tiny_vit, tiny_timm), *STRATEGIES[strategy], "scenario=class_il",
                   "strategy.epochs=1", "probe_samples=0", "logger=console", "strategy.batch_size=8")
    cfg.stream = OmegaConf.create({"_target_": vision_streams, "n_tasks": 2, "n": 16, "seed": 0, "scenario": "class_il"})
    results = run(cfg, tmp_path / "run")
    R = results["accuracy_matrix"]
    assert results["run"]["status"] == "complete" and results["scenario"] == "class_il"
    assert all(0 <= R[i][j] <= 1 for i in range(2) for j in range(i + 1))


@pytest.mark.parametrize("shape", [(32, 32), (40, 32), (32, 48)])
def test_crop_pct_is_pilots_resize_256_then_centre_crop_224(shape):
    """PILOT's eval transform (RevisitingCIL utils/data.py: Resize(256, bicubic) + CenterCrop(224)), as
    torchvision computes it on a tensor; without crop_pct the whole image is resized."""
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0))
    pilot = TF.center_crop(TF.resize(x, 256, interpolation=TF.InterpolationMode.BICUBIC, antialias=True), [224, 224])
    pre = ImagePreprocess((224, 224), [0, 0, 0], [1, 1, 1], "bicubic", crop_pct=0.875).eval()
    torch.testing.assert_close(pre(x), pilot)
    whole = ImagePreprocess((224, 224), [0, 0, 0], [1, 1, 1], "bicubic").eval()
    torch.testing.assert_close(whole(x), F.interpolate(x, (224, 224), mode="bicubic", antialias=True, align_corners=False))
    with pytest.raises(UserError, match="model.crop_pct must be in"):
        ImagePreprocess((224, 224), [0, 0, 0], [1, 1, 1], crop_pct=1.5)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(15, 20), (70, 90)])
def test_resizing_by_matrix_products_is_antialiased_interpolation(mode, size):
    """The weights of the small-image path (eval resize, an accelerator's) give torch's antialiased resize
    (PIL's filters), shrinking and enlarging."""
    from cl_adapters.models.images import axis_weights

    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    rows, columns = axis_weights(40, size[0], mode, x.device), axis_weights(48, size[1], mode, x.device)
    expected = F.interpolate(x, size, mode=mode, antialias=True, align_corners=False)
    torch.testing.assert_close(rows @ x @ columns.T, expected)
    pre = ImagePreprocess((70, 90), [0.2, 0.3, 0.4], [0.5, 0.6, 0.7], mode).eval()  # normalises first: the same values
    enlarged = F.interpolate(x[..., :16, :20], (70, 90), mode=mode, antialias=True, align_corners=False)
    torch.testing.assert_close(pre(x[..., :16, :20]), (enlarged - pre.mean) / pre.std)
