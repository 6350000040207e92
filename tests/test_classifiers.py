"""Classifier kinds plug in: one ``ClassifierHead`` subclass declared with ``kind=`` is a kind the model builds,
fits, grows and checkpoints; an unknown kind or option is one line."""

from __future__ import annotations

import pytest
import torch

from cl_adapters.errors import UserError
from cl_adapters.models import MLP, AdaptedModel
from cl_adapters.models.classifiers import ClassifierHead, kinds, resolve
from cl_adapters.models.classifiers.base import REGISTRY


@pytest.fixture
def scaled_means():
    """A fitted kind declared here (as a module of one's own would): class sums times ``scale``."""

    class ScaledSums(ClassifierHead, kind="scaled_sums"):
        fitted = True
        options = {"scale": 1.0}
        summary = "test sums"

        def __init__(self, in_features, classes, **options):
            super().__init__(in_features, classes, **options)
            self.register_buffer("sums", torch.zeros(len(classes), in_features))

        def fit(self, features, labels):
            for column, label in enumerate(self.classes):
                self.sums[column] += features[labels == label].sum(0)

        def end_fit(self):
            self.sums *= self.settings["scale"]

        def forward(self, features):
            return super().forward(features) if self.training else features @ self.sums.T

    yield ScaledSums
    del REGISTRY["scaled_sums"]


def _model(**kwargs) -> AdaptedModel:
    torch.manual_seed(0)
    return AdaptedModel(MLP((1, 4, 4), hidden=(8,)), None, train_backbone="never", scenario="class_il", **kwargs)


def test_the_built_in_kinds_come_first_and_an_unknown_one_lists_them():
    assert kinds()[:2] == ("linear", "ncm")
    with pytest.raises(UserError, match=r"^strategy.model.classifier must be one of \('linear', 'ncm'.*got 'knn'$"):
        resolve("knn")


def test_a_declared_kind_is_built_fitted_grown_and_checkpointed(scaled_means, tmp_path):
    from cl_adapters.models.checkpoint import load, save

    assert "scaled_sums" in kinds()
    model = _model(classifier="scaled_sums", classifier_options={"scale": 2.0}).eval()
    model.add_task(0, [0, 1])
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 0, 1, 0, 1])
    model.fit_task(0, [(x[:3], y[:3]), (x[3:], y[3:])])
    sums = model.heads["shared"].sums.clone()
    assert torch.allclose(sums[0], 2 * model.base_features(x[y == 0]).sum(0))
    assert not model.trains() and model.fitted_state(0) == [model.heads["shared"].sums]
    model.add_task(1, [2, 3])  # the shared head grows: the old rows kept
    assert torch.equal(model.heads["shared"].sums[:2], sums) and type(model.heads["shared"]) is scaled_means
    save(model, tmp_path)
    again = load(_model(classifier="scaled_sums", classifier_options={"scale": 2.0}), tmp_path).eval()
    assert torch.equal(again.heads["shared"].sums, model.heads["shared"].sums)


def test_an_unknown_option_is_one_line_naming_the_key_and_the_options(scaled_means):
    with pytest.raises(UserError, match=r"^strategy.model.classifier_options.scal: classifier=scaled_sums has no "
                                        r"such option \(its options: scale\)$"):
        _model(classifier="scaled_sums", classifier_options={"scal": 2.0})
    with pytest.raises(UserError, match=r"classifier_options.M: classifier=ncm has no such option \(its options: none\)"):
        _model(classifier="ncm", classifier_options={"M": 5})


def test_a_fitted_kind_refuses_adapters_naming_itself(scaled_means):
    from cl_adapters.adapters import AdapterConfig

    with pytest.raises(UserError, match="^classifier=scaled_sums is test sums alone"):
        AdaptedModel(MLP((1, 4, 4), hidden=(8,)), AdapterConfig(), classifier="scaled_sums")


def test_the_options_compose_from_the_command_line(make_cfg, tmp_path):
    from cl_adapters.runs.run import run

    with pytest.raises(UserError, match=r"^strategy.model.classifier_options.M: classifier=ncm has no such option"):
        run(make_cfg("strategy=ncm", "strategy.model.classifier_options={M:5}", "stream.n_tasks=2"), tmp_path)
