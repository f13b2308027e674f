"""scikit-learn estimators: they fit what SmilesModel.fit fits, learn, and behave in clone, Pipeline,
cross_val_score and GridSearchCV.

sklearn's own estimator checks feed numeric feature matrices; these estimators take one column of SMILES
(``input_tags.two_d_array = False``, so ``check_estimator`` itself yields no check). ``SKLEARN_CHECKS`` runs the
checks that read no data or only check unfitted behaviour; the data-bound checks that matter for SMILES
(fit returns self and leaves parameters alone, refitting gives the same model, pickling) are re-done on SMILES
in ``test_fit_leaves_parameters_alone_refits_alike_and_pickles``. The others are skipped because they test what
does not apply to SMILES: numeric dtypes, sparse, NaN/inf, complex, f-contiguous and memmapped arrays,
n_features_in_, feature-count errors, sample_weight and class_weight (not supported), and
``_parameter_constraints`` (values are checked by ``TrainConfig`` / ``EmbedConfig`` at fit).
"""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils import estimator_checks

from smilesformer import (
    BadInputError,
    DataConfig,
    EmbedConfig,
    SmilesClassifier,
    SmilesEmbedder,
    SmilesformerError,
    SmilesModel,
    SmilesRegressor,
    TrainConfig,
    embed,
    random_split,
)
from smilesformer.estimators import TRAIN_FIELDS_LEFT_OUT, TRAIN_PARAMS

FAST = dict(model="random:tiny", batch_size=16, descriptors="none", trees="none", progress=False)
"""A random 2-layer model on SMILES alone: a fit on 50 molecules takes well under a second."""
LEARN = dict(FAST, epochs=20, learning_rate=3e-3, warmup_fraction=0.0, validation_fraction=0.0)
"""Enough training for the tiny model to learn a label its tokens spell."""


def aromatic_carbons(smiles) -> np.ndarray:
    """A label the tokens spell (count of ``c``), so a tiny random model learns it in seconds."""
    return np.array([s.count("c") for s in smiles], dtype=float)


@pytest.fixture(scope="module")
def smiles(esol50) -> pd.Series:
    return esol50["smiles"]


@pytest.fixture(scope="module")
def regressor(smiles) -> SmilesRegressor:
    return SmilesRegressor(**LEARN).fit(smiles, aromatic_carbons(smiles))


@pytest.fixture(scope="module")
def embedder() -> SmilesEmbedder:
    return SmilesEmbedder().fit(None)


def test_parameters_are_train_config_fields_with_their_defaults():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TRAIN_PARAMS) | set(TRAIN_FIELDS_LEFT_OUT) == fields  # a new TrainConfig field must be decided on
    assert not set(TRAIN_PARAMS) & set(TRAIN_FIELDS_LEFT_OUT)
    for cls in (SmilesRegressor, SmilesClassifier):
        assert cls().train_config() == TrainConfig()  # the defaults are the CLI's
        assert cls().model == "smilesformer-moses"
    train, valid, _ = DataConfig("x").fractions
    assert SmilesRegressor().validation_fraction == pytest.approx(valid / (train + valid))
    defaults = EmbedConfig()
    assert SmilesEmbedder().embed_config() == defaults
    config = SmilesRegressor(epochs=3, learning_rate=1e-3, random_state=7, precision="fp32").train_config()
    assert (config.epochs, config.learning_rate, config.seed, config.precision.value) == (3, 1e-3, 7, "fp32")


def test_regressor_learns_predicts_and_scores(regressor, smiles):
    y = aromatic_carbons(smiles)
    pred = regressor.predict(smiles)
    assert pred.shape == (50,) and pred.dtype == float
    assert regressor.score(smiles, y) == pytest.approx(r2_score(y, pred))
    assert regressor.score(smiles, y) > 0.7, regressor.score(smiles, y)
    assert regressor.targets_ == ["y"]
    # a list, an array and a one-column frame are the same X
    frame = pd.DataFrame({"smiles": smiles[:5]})
    for X in (smiles[:5].tolist(), smiles[:5].to_numpy(), frame, frame.to_numpy()):
        np.testing.assert_allclose(regressor.predict(X), pred[:5], rtol=1e-6)


def test_fit_is_smilesmodel_fit_on_a_seeded_validation_cut(smiles, esol50):
    y = esol50["logS"].to_numpy(float)
    estimator = SmilesRegressor(**FAST, epochs=2, random_state=3, validation_fraction=0.2).fit(smiles, y)
    assert any("eval_loss" in h for h in estimator.model_.history)  # the held-out molecules were evaluated

    train, _, valid = random_split(50, (0.8, 0.0, 0.2), seed=3)
    assert (len(train), len(valid)) == (40, 10)
    model = SmilesModel.create("random:tiny", "regression", ["y"], 2, 128, seed=3, descriptors="none")
    model.fit(smiles[train].tolist(), y[train], smiles[valid].tolist(), y[valid], config=estimator.train_config())
    np.testing.assert_allclose(estimator.predict(smiles), model.predict(smiles.tolist())["y_pred"], rtol=1e-5)

    other_cut = SmilesRegressor(**FAST, epochs=2, random_state=4, validation_fraction=0.2).fit(smiles, y)
    assert not np.allclose(other_cut.predict(smiles), estimator.predict(smiles))


def test_multi_target_regression_with_missing_labels(smiles, esol50):
    y = pd.DataFrame({"logS": esol50["logS"], "rings": aromatic_carbons(smiles)})
    y.loc[::4, "rings"] = np.nan  # several targets: a gap is masked out of the loss
    estimator = SmilesRegressor(**FAST, epochs=2).fit(smiles, y)
    pred = estimator.predict(smiles)
    assert pred.shape == (50, 2) and np.isfinite(pred).all()
    assert estimator.targets_ == ["logS", "rings"]
    assert estimator.model_.meta.targets == ["logS", "rings"]
    # the label scaling is each target's own: predictions sit near each target's mean, not a shared one
    assert abs(pred[:, 0].mean() - y["logS"].mean()) < abs(pred[:, 0].mean() - y["rings"].mean())


def test_classifier_with_string_labels(smiles):
    labels = np.where(aromatic_carbons(smiles) > 0, "aromatic", "aliphatic")
    classifier = SmilesClassifier(**LEARN).fit(smiles, labels)
    assert classifier.classes_.tolist() == ["aliphatic", "aromatic"]
    proba = classifier.predict_proba(smiles)
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    pred = classifier.predict(smiles)
    assert pred.tolist() == classifier.classes_[proba.argmax(axis=1)].tolist()
    assert classifier.score(smiles, labels) == pytest.approx(np.mean(pred == labels))
    assert classifier.score(smiles, labels) > 0.9, classifier.score(smiles, labels)
    # the model trains on the positions of classes_: P(aromatic) is the binary head's P(class 1)
    table = classifier.model_.predict(smiles[:3].tolist())
    np.testing.assert_allclose(proba[:3, 1], table["y_prob"], rtol=1e-6)


def test_multiclass_classifier(smiles, esol50):
    bands = pd.Series(pd.cut(esol50["logS"], [-np.inf, -5, -2, np.inf], labels=["low", "mid", "high"]).astype(str),
                      name="band")
    classifier = SmilesClassifier(**FAST, epochs=2).fit(smiles, bands)
    assert classifier.classes_.tolist() == ["high", "low", "mid"]
    assert classifier.model_.meta.n_classes == 3 and classifier.model_.meta.targets == ["band"]
    proba = classifier.predict_proba(smiles)
    assert proba.shape == (50, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert set(classifier.predict(smiles)) <= {"high", "low", "mid"}


def test_clone_get_params_set_params_round_trip(regressor):
    estimator = SmilesRegressor("random:tiny", epochs=3, learning_rate=1e-3, random_state=5)
    params = estimator.get_params()
    assert params["epochs"] == 3 and params["random_state"] == 5 and params["model"] == "random:tiny"
    twin = clone(estimator)
    assert twin is not estimator and twin.get_params() == params
    assert estimator.set_params(epochs=7, trees="none") is estimator
    assert estimator.get_params()["epochs"] == 7 and estimator.train_config().trees == "none"
    assert SmilesRegressor(**estimator.get_params()).get_params() == estimator.get_params()
    fitted_clone = clone(regressor)  # a clone is unfitted and has the same parameters
    assert fitted_clone.get_params() == regressor.get_params() and not hasattr(fitted_clone, "model_")
    with pytest.raises(NotFittedError):
        fitted_clone.predict(["CCO"])
    assert "epochs=7" in repr(estimator)
    with pytest.raises(ValueError, match="epochs must be > 0, got 0"):
        SmilesRegressor(epochs=0).train_config()  # checked by TrainConfig when fit builds it
    embedder = SmilesEmbedder(pooling="cls", last_k=2)
    assert clone(embedder).get_params() == embedder.get_params()


SKLEARN_CHECKS = [
    "check_parameters_default_constructible",
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_mixin_order",
    "check_valid_tag_types",
    "check_estimator_tags_renamed",
]
"""Checks that read no data; for the embedder, whose fit reads no data either, also the fit checks below."""
UNFITTED_CHECKS = ["check_estimators_unfitted"]  # predict on numbers must raise NotFittedError before reading X
EMBEDDER_CHECKS = ["check_transformers_unfitted", "check_get_feature_names_out_error", "check_fit_check_is_fitted",
                   "check_estimators_fit_returns_self", "check_dont_overwrite_parameters",
                   "check_estimators_overwrite_params"]
ESTIMATORS = {"regressor": lambda: SmilesRegressor(**FAST, epochs=1), "classifier": lambda: SmilesClassifier(**FAST),
              "embedder": lambda: SmilesEmbedder()}


@pytest.mark.parametrize("kind,check", [(k, c) for k in ESTIMATORS for c in SKLEARN_CHECKS]
                         + [(k, c) for k in ("regressor", "classifier") for c in UNFITTED_CHECKS]
                         + [("embedder", c) for c in EMBEDDER_CHECKS])
def test_sklearn_checks_that_apply(kind, check):
    estimator = ESTIMATORS[kind]()
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)


def test_check_estimator_skips_string_input_so_checks_run_by_hand():
    tags = SmilesRegressor().__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array and tags.target_tags.multi_output
    with pytest.warns(SkipTestWarning, match="Can't test estimator SmilesRegressor"):
        estimator_checks.check_estimator(SmilesRegressor())  # hence SKLEARN_CHECKS and the test below


def test_fit_leaves_parameters_alone_refits_alike_and_pickles(smiles, esol50):
    y = esol50["logS"].to_numpy(float)
    estimator = SmilesRegressor(**FAST, epochs=1)
    before = estimator.get_params()
    names = set(vars(estimator))
    assert estimator.fit(smiles, y) is estimator
    assert estimator.get_params() == before
    added = set(vars(estimator)) - names
    assert added and all(a.endswith("_") or a.startswith("_") for a in added), added
    first = estimator.predict(smiles)
    np.testing.assert_allclose(estimator.fit(smiles, y).predict(smiles), first, rtol=1e-5)  # idempotent
    again = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(again.predict(smiles), first)


def test_pipelines_and_cross_validation(embedder, smiles, esol50):
    y = esol50["logS"].to_numpy(float)
    pipe = Pipeline([("embed", SmilesEmbedder()), ("ridge", Ridge())])
    scores = cross_val_score(pipe, smiles, y, cv=KFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert scores.mean() > 0.2, scores  # pretrained embeddings predict solubility on molecules they were not fit on

    alone = make_pipeline(SmilesRegressor(**FAST, epochs=1)).fit(smiles, y)
    direct = SmilesRegressor(**FAST, epochs=1).fit(smiles, y)
    np.testing.assert_allclose(alone.predict(smiles), direct.predict(smiles), rtol=1e-5)

    scores = cross_val_score(SmilesRegressor(**FAST, epochs=1), smiles, y, cv=2)
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_grid_search_picks_the_learning_rate_that_learns(smiles):
    y = aromatic_carbons(smiles)
    search = GridSearchCV(SmilesRegressor(**dict(LEARN, epochs=15)), {"learning_rate": [1e-6, 3e-3]},
                          cv=KFold(2, shuffle=True, random_state=0))
    search.fit(smiles, y)
    assert search.best_params_ == {"learning_rate": 3e-3}
    slow, fast = search.cv_results_["mean_test_score"]
    assert fast > 0 > slow, (slow, fast)  # a learning rate of 1e-6 leaves the model where it started
    assert search.best_estimator_.learning_rate == 3e-3 and hasattr(search.best_estimator_, "model_")


def test_embedder_gives_embed_vectors(embedder, smiles, regressor):
    X = embedder.transform(smiles)
    expected = embed("smilesformer-moses", smiles.tolist(), EmbedConfig()).vectors
    assert X.shape == (50, 384) and X.dtype == np.float32
    np.testing.assert_allclose(X, expected, rtol=1e-4, atol=1e-5)
    names = embedder.get_feature_names_out()
    assert names.tolist()[:2] == ["embedding_0", "embedding_1"] and len(names) == 384
    frame = clone(embedder).set_output(transform="pandas").fit_transform(smiles[:3])
    assert list(frame.columns) == names.tolist() and frame.shape == (3, 384)
    # a fitted estimator's model embeds too: the tiny model, two last layers joined
    tiny = SmilesEmbedder(regressor.model_, pooling="cls", last_k=2).fit_transform(smiles[:4])
    assert tiny.shape == (4, 64) and np.isfinite(tiny).all()
    with pytest.raises(SmilesformerError, match="has 3 hidden states"):
        SmilesEmbedder(regressor.model_, layer=9).fit(None)


def test_bad_input_is_named_with_row_value_and_fix(regressor, embedder, smiles):
    with pytest.raises(BadInputError,
                       match=r"(?s)position 1, column 'X': 'C1CC': .*unclosed ring.*Fix or remove") as info:
        SmilesRegressor(**FAST).fit(["CCO", "C1CC", "c1ccccc1"], [1.0, 2.0, 3.0])
    assert info.value.bad["row"].tolist() == [1]
    with pytest.raises(BadInputError, match=r"(?s)position 2, column 'smiles': ' '.*model_\.predict"):
        regressor.predict(pd.Series(["CCO", "c1ccccc1", " "], name="smiles"))
    with pytest.raises(BadInputError, match=r"(?s)position 0, column 'X': 'xyz'.*embeddings\.embed keeps every row"):
        embedder.transform(["xyz"])
    with pytest.raises(BadInputError, match=r"(?s)position 1, column 'y': nan: missing label"):
        SmilesRegressor(**FAST).fit(["CCO", "CCN"], [1.0, np.nan])
    with pytest.raises(BadInputError, match=r"(?s)position 0, column 'y': 'high': not a number"):
        SmilesRegressor(**FAST).fit(["CCO", "CCN"], ["high", 2.0])
    with pytest.raises(BadInputError, match=r"(?s)position 1, column 'y'.*missing label.*Give every molecule a class"):
        SmilesClassifier(**FAST).fit(["CCO", "CCN", "CCC"], ["a", None, "b"])
    with pytest.raises(SmilesformerError, match="single class \\('a'\\)"):
        SmilesClassifier(**FAST).fit(["CCO", "CCN"], ["a", "a"])
    with pytest.raises(SmilesformerError, match="X has 2 SMILES but y has 3 rows"):
        SmilesRegressor(**FAST).fit(["CCO", "CCN"], [1.0, 2.0, 3.0])
    with pytest.raises(SmilesformerError, match=r"one column of SMILES .*shape \(2, 2\)"):
        regressor.predict(pd.DataFrame({"a": ["CCO", "CCN"], "b": ["C", "N"]}))
    with pytest.raises(SmilesformerError, match=r"shape \(\).*a list such as \['CCO'\]"):
        regressor.predict("CCO")  # a bare string is not a column
    with pytest.raises(SmilesformerError, match="X is empty"):
        SmilesRegressor(**FAST).fit([], [])
    with pytest.raises(SmilesformerError, match="validation_fraction must be in"):
        SmilesRegressor(**FAST, validation_fraction=1.0).fit(["CCO", "CCN"], [1.0, 2.0])
