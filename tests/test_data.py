"""Reading tables and the bad-input policy: every problem named with row, value and fix; no row lost."""

from __future__ import annotations

import gzip
import urllib.request

import pandas as pd
import pytest
from rdkit import Chem

from smilesformer import BadInputError, DataConfig, SmilesformerError, load_dataset, read_table
from smilesformer.data import DATA_ENV, resolve_dataset

from .conftest import needs_shared_data


def _write(tmp_path, rows, name="data.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_reads_every_supported_format(tmp_path, esol50):
    frame = esol50.head(5)
    paths = {}
    frame.to_csv(paths.setdefault("csv", tmp_path / "a.csv"), index=False)
    frame.to_csv(paths.setdefault("tsv", tmp_path / "a.tsv"), sep="\t", index=False)
    frame.to_parquet(paths.setdefault("parquet", tmp_path / "a.parquet"))
    with gzip.open(paths.setdefault("csv.gz", tmp_path / "a.csv.gz"), "wt") as fh:
        frame.to_csv(fh, index=False)
    (tmp_path / "a.smi").write_text("".join(f"{s} mol{i}\n" for i, s in enumerate(frame["smiles"])))
    paths["smi"] = tmp_path / "a.smi"
    writer = Chem.SDWriter(str(tmp_path / "a.sdf"))
    for s, y in zip(frame["smiles"], frame["logS"]):
        mol = Chem.MolFromSmiles(s)
        mol.SetProp("logS", str(y))
        writer.write(mol)
    writer.close()
    paths["sdf"] = tmp_path / "a.sdf"
    for kind, path in paths.items():
        table = read_table(path)
        assert len(table) == 5, kind
        assert "smiles" in table.columns, kind
    assert read_table(paths["sdf"])["logS"].astype(float).tolist() == pytest.approx(frame["logS"].tolist())
    assert read_table(paths["smi"])["name"].tolist() == [f"mol{i}" for i in range(5)]


def test_empty_and_headerless_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SmilesformerError, match="empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("smiles,y\n")
    with pytest.raises(SmilesformerError, match="no data rows"):
        read_table(tmp_path / "header.csv")
    with pytest.raises(SmilesformerError, match="unknown extension"):
        (tmp_path / "x.xlsx").write_text("x")
        read_table(tmp_path / "x.xlsx")


def test_missing_column_lists_the_available_ones(tmp_path):
    path = _write(tmp_path, {"smiles": ["CCO", "CCN"], "y": [1, 2]})
    with pytest.raises(SmilesformerError, match=r"'logS'.*available columns: 'smiles', 'y'"):
        load_dataset(DataConfig(str(path), target_cols=["logS"]))


def test_invalid_smiles_stop_with_row_value_and_reason(tmp_path):
    path = _write(tmp_path, {"smiles": ["CCO", "C1CC", "CCN", "not_a_smiles(", "c1ccccc1"], "y": [1, 2, 3, 4, 5]})
    with pytest.raises(BadInputError) as info:
        load_dataset(DataConfig(str(path), target_cols=["y"]))
    message = str(info.value)
    assert "data rows counted from 1" in message
    assert "data row 2, column 'smiles': 'C1CC': unclosed ring" in message
    assert "data row 4, column 'smiles': 'not_a_smiles('" in message
    assert "--bad-input skip" in message
    assert info.value.bad["row"].tolist() == [1, 3]


def test_skip_policy_drops_and_reports_every_bad_row(tmp_path):
    path = _write(tmp_path, {"smiles": ["CCO", "C1CC", "CCN ", "CCC", ""], "y": ["1", "2", "abc", "", "5"]})
    loaded = load_dataset(DataConfig(str(path), target_cols=["y"], bad_input="skip"))
    assert loaded.table["row"].tolist() == [0]
    reasons = dict(zip(loaded.bad["row"], loaded.bad["reason"]))
    assert reasons[1].startswith("unclosed ring")
    assert reasons[2] == "not a number"
    assert reasons[3] == "missing label"
    assert reasons[4] == "empty SMILES"
    assert sorted(set(loaded.bad["row"]) | set(loaded.table["row"])) == [0, 1, 2, 3, 4]


def test_trailing_spaces_are_stripped_and_canonicalization_is_optional(tmp_path):
    path = _write(tmp_path, {"smiles": ["OCC ", " C(C)O"], "y": [1, 2]})
    assert load_dataset(DataConfig(str(path), target_cols=["y"])).table["smiles"].tolist() == ["OCC", "C(C)O"]
    canon = load_dataset(DataConfig(str(path), target_cols=["y"], canonicalize=True)).table["smiles"].tolist()
    assert canon == ["CCO", "CCO"]


def test_multitask_rows_keep_partial_labels_but_not_empty_ones(tmp_path):
    path = _write(tmp_path, {"smiles": ["CCO", "CCN", "CCC"], "a": ["1", "", ""], "b": ["", "0", ""]})
    with pytest.raises(BadInputError, match="data row 3.*every label missing"):
        load_dataset(DataConfig(str(path), target_cols=["a", "b"], task="classification"))
    loaded = load_dataset(DataConfig(str(path), target_cols=["a", "b"], task="classification", bad_input="skip"))
    assert loaded.table["row"].tolist() == [0, 1]
    assert loaded.table["a"].isna().tolist() == [False, True]


def test_classification_labels_must_be_class_ids(tmp_path):
    path = _write(tmp_path, {"smiles": ["CCO", "CCN"], "y": ["1", "0.5"]})
    with pytest.raises(BadInputError, match="data row 2, column 'y': '0.5': classification labels"):
        load_dataset(DataConfig(str(path), target_cols=["y"], task="classification"))


def test_duplicates_are_counted_and_can_be_averaged(tmp_path):
    path = _write(tmp_path, {"smiles": ["CCO", "OCC", "CCN"], "y": [1.0, 3.0, 5.0]})
    kept = load_dataset(DataConfig(str(path), target_cols=["y"]))
    assert kept.n_duplicates == 1 and len(kept.table) == 3
    merged = load_dataset(DataConfig(str(path), target_cols=["y"], duplicates="average"))
    assert merged.n_duplicates == 1
    assert merged.table["y"].tolist() == [2.0, 5.0]
    assert merged.table["row"].tolist() == [0, 2]


def test_repeated_molecules_whose_labels_disagree_are_reported_and_can_be_dropped(tmp_path):
    # CCO and OCC: 1.0 against 5.0, far apart for a target whose sd is about 1.8; CCN twice, in agreement
    path = _write(tmp_path, {"smiles": ["CCO", "OCC", "CCN", "NCC", "c1ccccc1", "CCCl"],
                             "y": [1.0, 5.0, 2.0, 2.1, 3.0, 4.0]})
    kept = load_dataset(DataConfig(str(path), target_cols=["y"]))
    assert kept.conflicts == 1 and len(kept.table) == 6
    report = kept.duplicates
    assert report["row"].tolist() == [0, 1, 2, 3] and report["conflict"].tolist() == [True, True, False, False]
    dropped = load_dataset(DataConfig(str(path), target_cols=["y"], duplicates="drop-conflicts"))
    assert dropped.table["row"].tolist() == [2, 3, 4, 5] and dropped.conflicts == 1
    classes = _write(tmp_path, {"smiles": ["CCO", "OCC", "OCC", "CCN"], "y": ["1", "0", "0", "1"]})
    merged = load_dataset(DataConfig(str(classes), target_cols=["y"], task="classification", duplicates="average"))
    assert merged.conflicts == 1 and merged.table["y"].tolist() == [0.0, 1.0]  # the most frequent class


def test_a_run_lists_conflicting_labels_in_its_notes_and_duplicates_csv(tmp_path):
    from smilesformer import TrainConfig
    from smilesformer.workflow import run_finetune

    rows = {"smiles": ["CCO", "OCC"] + [f"C{'C' * k}O" for k in range(2, 20)], "y": [1.0, 5.0] + [2.0] * 18}
    path = _write(tmp_path, rows)
    run = run_finetune(DataConfig(str(path), target_cols=["y"], fractions=(0.8, 0.1, 0.1)), "random:tiny",
                       TrainConfig(epochs=1, descriptors="none", trees="none", progress=False), tmp_path / "run")
    assert any("1 repeated molecule(s) have labels more than 0.5 sd apart" in n for n in run.notes), run.notes
    listed = pd.read_csv(tmp_path / "run" / "duplicates.csv")
    assert listed["data_row"].tolist() == [1, 2] and listed["conflict"].all()


def test_offline_and_not_found_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nothing"))
    monkeypatch.setenv("SMILESFORMER_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SmilesformerError, match=f"not found in \\${DATA_ENV}.*network is unreachable"):
        resolve_dataset("esol")
    with pytest.raises(SmilesformerError, match="unknown data set 'nope'"):
        resolve_dataset("nope")


def test_download_is_checked_and_cached(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("SMILESFORMER_CACHE", str(tmp_path / "cache"))

    class Response:
        def __init__(self, body):
            self.body = body

        def read(self):
            return self.body

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(b"smiles,exp\nCCO,1\n"))
    with pytest.raises(SmilesformerError, match="sha256"):
        resolve_dataset("lipophilicity")
    assert not (tmp_path / "cache" / "lipophilicity.csv").exists()


@needs_shared_data
def test_registered_data_set_loads_from_the_data_folder():
    loaded = load_dataset(DataConfig("esol"))
    assert len(loaded.table) == 1128 and loaded.target_cols == ["measured log solubility in mols per litre"]
    assert not loaded.table["smiles"].str.endswith(" ").any()


def test_write_table_writes_what_read_table_reads_and_refuses_other_formats(tmp_path):
    from smilesformer.data import write_table

    table = pd.DataFrame({"smiles": ["CCO", "c1ccccc1[nH]"], "y": ["1.5", "2"]})
    for name in ("t.csv", "t.tsv", "t.parquet", "t.csv.gz"):
        back = read_table(write_table(table, tmp_path / "sub" / name))
        assert back.astype(str).equals(table), name
    with pytest.raises(SmilesformerError, match=r"\.csv, \.tsv or \.parquet"):
        write_table(table, tmp_path / "t.xlsx")


def test_molecules_over_the_size_limits_are_bad_rows_not_stalls(monkeypatch):
    from smilesformer.data import MoleculeLimits, parse_smiles, set_molecule_limits, validate_smiles

    monkeypatch.delenv("SMILESFORMER_MAX_ATOMS", raising=False)
    monkeypatch.delenv("SMILESFORMER_MAX_CHARS", raising=False)
    limits = MoleculeLimits.current()
    assert limits == MoleculeLimits()
    clean, errors = validate_smiles(["CCO", "C" * (limits.max_atoms + 1), "C" * (limits.max_chars + 1)])
    assert clean[0] == "CCO" and clean[1] is None and clean[2] is None
    assert errors[1].startswith(f"invalid SMILES: too large: {limits.max_atoms + 1} atoms, over the limit")
    assert "--max-atoms" in errors[1]
    assert f"{limits.max_chars + 1} characters" in errors[2] and "--max-chars" in errors[2]
    # the limits can be changed, and reach worker processes through the environment
    monkeypatch.setenv("SMILESFORMER_MAX_ATOMS", "5")
    assert parse_smiles("CCCCCC")[0] is None and parse_smiles("CCCCC")[0] is not None
    assert set_molecule_limits(max_atoms=10).max_atoms == 10
    assert parse_smiles("CCCCCC")[0] is not None
    monkeypatch.setenv("SMILESFORMER_MAX_ATOMS", "ten")
    with pytest.raises(SmilesformerError, match="SMILESFORMER_MAX_ATOMS='ten' is not a whole number"):
        parse_smiles("CCO")


def test_a_lone_surrogate_is_a_bad_row():
    from smilesformer.data import validate_smiles

    clean, errors = validate_smiles(["CCO", "\ud800", "C\udfffC"])
    assert clean == ["CCO", None, None]
    assert errors[1].startswith("invalid SMILES: not valid text") and "character 1" in errors[1]
    assert "character 2" in errors[2]


def test_damaged_and_mis_encoded_tables_name_the_problem_and_the_line(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("smiles,y\n" + "".join(f"{'C' * (i % 7 + 1)}O,{i}\n" for i in range(5000)))
    whole = gzip.compress(good.read_bytes())
    (tmp_path / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SmilesformerError, match="damaged or cut short.*download or compress it again"):
        read_table(tmp_path / "cut.csv.gz")
    (tmp_path / "fake.csv.gz").write_bytes(b"smiles\nCCO\n")
    with pytest.raises(SmilesformerError, match="damaged or cut short"):
        read_table(tmp_path / "fake.csv.gz")
    (tmp_path / "latin1.csv").write_bytes("smiles,name\nCCO,ethanol\nCO,m\xe9thanol\n".encode("latin-1"))
    with pytest.raises(SmilesformerError, match=r"not UTF-8 text: line 3 \(data row 2 .*m\\xe9thanol.*Save the file"):
        read_table(tmp_path / "latin1.csv")
    (tmp_path / "twice.csv").write_text("smiles,y,smiles\nCCO,1,CC\n")
    with pytest.raises(SmilesformerError, match="names column\\(s\\) 'smiles' more than once"):
        read_table(tmp_path / "twice.csv")
    with pytest.raises(SmilesformerError, match="names column\\(s\\) 'smiles' more than once"):
        load_dataset(DataConfig(str(tmp_path / "twice.csv"), target_cols=["y"]))


def test_reading_a_bad_smiles_keeps_the_callers_rdkit_log_levels():
    from rdkit import RDLogger, rdBase

    from smilesformer.data import parse_smiles

    before = rdBase.LogStatus()
    RDLogger.DisableLog("rdApp.warning")  # as a notebook that does not want RDKit's notes would
    try:
        assert parse_smiles("C1CC")[1]  # a failure: its reason is read from RDKit's log
        assert "rdApp.warning:disabled" in rdBase.LogStatus()
    finally:
        for level in before.splitlines():
            name, state = level.rsplit(":", 1)
            (rdBase.EnableLog if state == "enabled" else rdBase.DisableLog)(name)


def test_rdkits_reason_is_given_whole():
    from smilesformer.data import parse_smiles

    mol, reason = parse_smiles("C1CC(")
    assert mol is None and not reason.endswith(":") and "position" in reason and "C1CC(" in reason, reason


def test_saved_weights_are_as_readable_as_the_rest_of_the_run(make_tiny_model, tmp_path):
    folder = make_tiny_model().save_pretrained(tmp_path / "model")
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["tokenizer.json"], modes


@pytest.mark.parametrize("name, text, columns, smiles", [
    ("csv_saved_as.txt", "smiles,y\nCCO,1.0\nCCN,-0.77\n", ["smiles", "y"], ["CCO", "CCN"]),
    ("semicolons.csv", "smiles;y\nCCO;1.0\nCCN;2.5\n", ["smiles", "y"], ["CCO", "CCN"]),
    ("header.smi", "SMILES Name\nCCO ethanol\nCCN ethylamine\nc1ccccc1 benzene\n", ["smiles", "name"],
     ["CCO", "CCN", "c1ccccc1"]),
    ("plain.smi", "CCO\nCCN\n", ["smiles"], ["CCO", "CCN"]),
    ("spaces.csv", "smiles  , y \nCCO,1\n", ["smiles", "y"], ["CCO"]),
    ("bom_crlf.csv", "\ufeffsmiles,y\r\nCCO,1\r\n", ["smiles", "y"], ["CCO"]),
])
def test_text_tables_are_read_by_content(tmp_path, name, text, columns, smiles):
    from smilesformer.data import read_table

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    table = read_table(path)
    assert list(table.columns) == columns and table.iloc[:, 0].tolist() == smiles


def test_separated_values_without_a_header_in_a_smi_file_stop_with_the_fix(tmp_path):
    from smilesformer.data import read_table

    path = tmp_path / "values.txt"
    path.write_text("CCO,1.0\nCCN,2.0\nc1ccccc1,3.0\n")
    with pytest.raises(SmilesformerError, match=r"separated by ',' without a header line .*'CCO,1.0'.*save it as .csv"):
        read_table(path)


def test_sep_decides_where_the_content_cannot(tmp_path):
    from smilesformer.data import read_table

    path = tmp_path / "pipes.csv"
    path.write_text("smiles|y\nCCO|1\n")  # one line: a comma-free header read as one column by the extension alone
    assert list(read_table(path, sep="|").columns) == ["smiles", "y"]


def test_a_header_naming_no_smiles_column_lists_the_names_quoted(tmp_path):
    path = _write(tmp_path, {"smile ": ["CCO"], "y": [1.0]})
    with pytest.raises(SmilesformerError, match=r"columns: 'smile', 'y'; name the column with --smiles-col"):
        load_dataset(DataConfig(str(path), target_cols=["y"]))


def test_a_split_column_without_split_column_is_refused_by_the_config():
    with pytest.raises(ValueError, match=r"split_col 'fold' is given but split is 'scaffold'"):
        DataConfig("x.csv", target_cols=["y"], split="scaffold", split_col="fold")


def test_constant_labels_and_one_class_draw_without_warnings(tmp_path):
    import warnings

    import numpy as np

    from smilesformer.plots import plot_parity, plot_roc

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a library warning reaching the user fails the test
        plot_parity(np.ones(5), np.arange(5.0), tmp_path / "parity.png")
        plot_roc(np.ones((5, 1)), np.linspace(0, 1, 5)[:, None], tmp_path / "roc.png", ["y"])
    assert (tmp_path / "parity.png").is_file() and (tmp_path / "roc.png").is_file()
