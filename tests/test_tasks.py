"""Task layouts: the one place regression, binary and multiclass differ."""

import numpy as np
import pandas as pd
import torch

from smilesformer.tasks import ModelMeta, compute_metrics, prediction_columns, prediction_matrix

REG = ModelMeta("regression", ["a", "b"])
BIN = ModelMeta("classification", ["a", "b"])
MULTI = ModelMeta("classification", ["c"], n_classes=3)


def test_label_scaling_round_trips_and_the_loss_skips_missing_labels():
    y = np.array([[1.0, 10.0], [3.0, np.nan], [5.0, 30.0]])
    meta = ModelMeta("regression", ["a", "b"])
    meta.layout.fit_scaling(meta, y)
    scaled = meta.layout.training_labels(meta, y)
    assert np.allclose(np.nanmean(scaled, axis=0), 0) and np.isnan(scaled[1, 1])
    assert np.allclose(meta.layout.outputs(meta, scaled[[0, 2]]), y[[0, 2]], atol=1e-5), "outputs undo the scaling"
    logits = torch.zeros(3, 2)
    loss = meta.layout.loss(logits, torch.as_tensor(scaled))
    assert torch.isclose(loss, torch.as_tensor(np.nanmean(scaled ** 2), dtype=torch.float32))
    per_example = meta.layout.per_example_loss(meta, logits, torch.as_tensor(y, dtype=torch.float32))
    assert torch.allclose(per_example, torch.as_tensor(np.nanmean(scaled ** 2, axis=1), dtype=torch.float32))


def test_each_layout_writes_and_reads_back_its_columns():
    for meta, k in ((REG, 2), (BIN, 2), (MULTI, 3)):
        table = pd.DataFrame(np.nan, index=range(3), columns=prediction_columns(meta))
        out = meta.layout.outputs(meta, np.array([[0.2, -0.1, 0.3][:k], [1.0, 2.0, -1.0][:k]], dtype=np.float32))
        meta.layout.write(table, [0, 2], meta, out, None)
        assert np.allclose(prediction_matrix(meta, table)[[0, 2]], out) and np.isnan(table.iloc[1, 0])
    assert prediction_columns(MULTI) == ["c_prob_0", "c_prob_1", "c_prob_2", "c_pred"]
    assert prediction_columns(BIN) == ["a_prob", "a_pred", "b_prob", "b_pred"]
    spread = ModelMeta("regression", ["a"], tta=2)
    assert prediction_columns(spread) == ["a_pred", "a_sd", "a_pi90_low", "a_pi90_high"]


def test_metrics_follow_the_layout():
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    p = np.array([[0.1], [0.8], [0.7], [0.4]])
    binary = compute_metrics(ModelMeta("classification", ["t"]), y, p)
    assert binary["per_target"]["t"]["roc_auc"] == 1.0
    regression = compute_metrics(ModelMeta("regression", ["t"]), y, p)
    assert regression["mean"]["mae"] == np.mean(np.abs(y - p))
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    multi = compute_metrics(MULTI, np.array([[0.0], [1.0], [2.0]]), probs)
    assert multi["per_target"]["c"]["accuracy"] == 1.0


def test_each_layout_names_its_outputs_and_their_unit():
    assert [REG.layout.output_name(REG, j) for j in range(2)] == ["a", "b"]
    assert [BIN.layout.output_name(BIN, j) for j in range(2)] == ["a logit of class 1", "b logit of class 1"]
    assert [MULTI.layout.output_name(MULTI, j) for j in range(3)] == [f"c logit of class {j}" for j in range(3)]
    meta = ModelMeta("regression", ["a", "b"])
    assert meta.layout.output_scale(meta, 1) == (1.0, 0.0), "no scaling learnt yet"
    meta.layout.fit_scaling(meta, np.array([[1.0, 10.0], [3.0, 30.0]]))
    assert meta.layout.output_scale(meta, 1) == (10.0, 20.0), "a standardized output goes back to label units"
    assert BIN.layout.output_scale(BIN, 0) == MULTI.layout.output_scale(MULTI, 2) == (1.0, 0.0), "logits stay logits"
