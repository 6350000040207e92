"""Exports other tools load, each reproducing our outputs on a small BERT: per-task LoRAs as peft folders
(``PeftModel.from_pretrained`` on the plain encoder: our features and, with the exported head, our logits)
or merged into the encoder (``AutoModel.from_pretrained``), bottleneck adapters in AdapterHub's format
(``load_adapter``); what a format cannot hold is refused before writing."""

import json
import re

import pytest
import safetensors
import torch
import torch.nn.functional as F

from cl_adapters.adapters import AdapterConfig, LoraConfig
from cl_adapters.adapters.route import Route
from cl_adapters.errors import UserError
from cl_adapters.models import AdaptedModel, HFEncoder
from cl_adapters.models.exports.adapterhub import save_adapterhub
from cl_adapters.models.exports.peft import save_merged, save_peft


def two_task_lora_model(path, **kwargs):
    torch.manual_seed(1)
    model = AdaptedModel(HFEncoder(name_or_path=path), LoraConfig(r=4, alpha=8), **kwargs)
    model.add_task(0, 2)
    model.add_task(1, [2, 3])
    with torch.no_grad():  # B starts at zero: make every LoRA change its layer, each differently
        for key in model.adapters.keys():
            for p in model.adapters.parameters(key):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def ids(n=6, length=12):
    x = torch.randint(1, 100, (n, length), generator=torch.Generator().manual_seed(2))
    x[0, 8:] = 0  # padding
    return x


def test_peft_loads_each_task_and_reproduces_its_features_and_logits(tiny_bert, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    model, x = two_task_lora_model(tiny_bert), ids()
    folders = save_peft(model, tmp_path)
    assert [f.name for f in folders] == ["task-0", "task-1"]
    for task, folder in enumerate(folders):
        assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "head.safetensors"]
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == tiny_bert and config["r"] == 4 and config["lora_alpha"] == 8
        encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(config["base_model_name_or_path"]), str(folder)).eval()
        with safetensors.safe_open(str(folder / "head.safetensors"), framework="pt") as f:
            head, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        mask = x != int(meta["pad_token_id"])
        with torch.no_grad():
            hidden = encoder(input_ids=x, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            ours = model.features(x, Route.whole(str(task)))
            torch.testing.assert_close(pooled, ours, rtol=1e-5, atol=1e-6)  # the same ops, a different batch cut
            assert not torch.allclose(ours, model.backbone(x), atol=1e-3)  # the LoRA matters: not the bare encoder
            logits = F.linear(pooled, head["weight"], head["bias"])
            classes = json.loads(meta["classes"])
            torch.testing.assert_close(logits, model(x, task)[:, classes], rtol=1e-5, atol=1e-5)
    assert classes == [2, 3] and meta["pooling"] == "mean"


def test_what_a_peft_folder_cannot_hold_is_refused(tiny_bert, tmp_path):
    with pytest.raises(UserError, match="format=peft exports LoRAs .* adapter is AdapterConfig"):
        model = AdaptedModel(HFEncoder(name_or_path=tiny_bert), AdapterConfig(placement="pfeiffer"))
        save_peft(model, tmp_path)
    with pytest.raises(UserError, match="the backbone trained in this run .train_backbone=all"):
        save_peft(two_task_lora_model(tiny_bert, train_backbone="all"), tmp_path)
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_a_merged_export_is_a_plain_encoder_with_our_features(tiny_bert, tmp_path):
    from transformers import AutoModel

    model, x = two_task_lora_model(tiny_bert), ids()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folders = save_merged(model, tmp_path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model itself is untouched
    mask = x != 0
    for task, folder in enumerate(folders):
        assert {"config.json", "model.safetensors", "head.safetensors"} <= {p.name for p in folder.iterdir()}
        encoder = AutoModel.from_pretrained(folder).eval()
        assert not any("lora" in name for name in encoder.state_dict())
        with torch.no_grad():
            hidden = encoder(input_ids=x, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            torch.testing.assert_close(pooled, model.features(x, Route.whole(str(task))), rtol=1e-4, atol=1e-5)


def test_a_merged_export_may_hold_a_trained_backbone(tiny_bert, tmp_path):
    from transformers import AutoModel

    model, x = two_task_lora_model(tiny_bert, train_backbone="all"), ids()
    with torch.no_grad():
        model.backbone.model.embeddings.word_embeddings.weight.add_(0.5)  # as if it trained
    (folder,) = save_merged(model, tmp_path)[1:]
    encoder = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        pooled = encoder(input_ids=x, attention_mask=x != 0).last_hidden_state
        pooled = (pooled * (x != 0)[..., None]).sum(1) / (x != 0).sum(1, keepdim=True)
    torch.testing.assert_close(pooled, model.features(x, Route.whole("1")), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("placement,activation", [("pfeiffer", "relu"), ("houlsby", "silu"), ("parallel", "relu")])
def test_adapterhub_loads_each_task_and_reproduces_its_features(tiny_bert, tmp_path, placement, activation):
    import adapters
    from transformers import AutoModel

    torch.manual_seed(1)
    model = AdaptedModel(HFEncoder(name_or_path=tiny_bert), AdapterConfig(placement, r=8, activation=activation, scaling=2.0))
    model.add_task(0, 2)
    model.add_task(1, [2, 3])
    with torch.no_grad():
        for key in model.adapters.keys():
            for p in model.adapters.parameters(key):
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    x = ids()
    mask = x != 0
    folders = save_adapterhub(model, tmp_path / "new" / "hub")  # a folder that does not exist yet
    for task, folder in enumerate(folders):
        assert {"adapter_config.json", "pytorch_adapter.bin", "head.safetensors"} <= {p.name for p in folder.iterdir()}
        hub = AutoModel.from_pretrained(tiny_bert)
        adapters.init(hub)
        name = hub.load_adapter(str(folder))
        hub.set_active_adapters(name)
        hub.eval()
        with torch.no_grad():
            hidden = hub(input_ids=x, attention_mask=mask.long()).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            ours = model.features(x, Route.whole(str(task)))
            torch.testing.assert_close(pooled, ours, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(ours, model.backbone(x), atol=1e-3)  # the adapter matters


def test_what_adapterhub_cannot_hold_is_refused(tiny_bert, tmp_path):
    from cl_adapters.adapters import FusionConfig

    with pytest.raises(UserError, match="format=adapterhub exports bottleneck adapters .* adapter is LoraConfig"):
        save_adapterhub(two_task_lora_model(tiny_bert), tmp_path)
    with pytest.raises(UserError, match="adapter.activation 'elu' has no AdapterHub equivalent"):
        save_adapterhub(AdaptedModel(HFEncoder(name_or_path=tiny_bert), AdapterConfig(activation="elu")), tmp_path)
    with pytest.raises(UserError, match=re.escape("task 1's fusion has a value bias (max |b| 0.5), AdapterHub's value matrix has none")):
        model = AdaptedModel(HFEncoder(name_or_path=tiny_bert), AdapterConfig(), fusion=FusionConfig())
        model.add_task(0, 2)
        model.add_task(1, 2)
        model.next_stage()
        with torch.no_grad():
            model.fusions(1)[0].value.bias[3] = 0.5
        save_adapterhub(model, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("placement,fusion", [("pfeiffer", dict(rank=16, value=False, temperature=2.0)),
                                              ("houlsby", dict(value=True))])
def test_adapterhub_loads_a_fusion_and_reproduces_the_fused_task(tiny_bert, tmp_path, placement, fusion):
    import adapters
    from transformers import AutoModel

    from cl_adapters.adapters import FusionConfig

    torch.manual_seed(1)
    model = AdaptedModel(HFEncoder(name_or_path=tiny_bert), AdapterConfig(placement, r=8), fusion=FusionConfig(**fusion))
    model.add_task(0, 2)
    model.add_task(1, 2)
    model.next_stage()  # task 1's fusion over adapters 0 and 1
    with torch.no_grad():
        for key in model.adapters.keys():
            for p in model.adapters.parameters(key):
                p.add_(torch.randn_like(p) * 0.1)
        for f in model.fusions(1):
            f.query.weight.normal_(0, 0.5)
            f.key.weight.normal_(0, 0.5)
            if f.value is not None:
                f.value.weight.add_(torch.randn_like(f.value.weight) * 0.1)  # its bias stays 0: AdapterHub has none
    model.eval()
    save_adapterhub(model, tmp_path)
    hub = AutoModel.from_pretrained(tiny_bert)
    adapters.init(hub)
    for task in (0, 1):
        hub.load_adapter(str(tmp_path / f"task-{task}"))
    hub.load_adapter_fusion(str(tmp_path / "task-1" / "fusion"))
    hub.set_active_adapters(adapters.Fuse("task_0", "task_1"))
    hub.eval()
    x = ids()
    mask = x != 0
    with torch.no_grad():
        hidden = hub(input_ids=x, attention_mask=mask.long()).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        fused = model.features(x, Route.whole("1"))
        torch.testing.assert_close(pooled, fused, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(fused, model.features(x, Route.whole("0")), atol=1e-3)
