"""Text datasets: generated files in the exact on-disk formats of CLINC150
(`data_full.json`), BANKING77 (`train.csv`, `test.csv`) and the `text` dataset's CSV, TSV
and JSON Lines; ids by sorted name, splits, out-of-scope handling, the SHA-256 check, the
download (monkeypatched), every bad input, and the real files when they are at hand."""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from benchmarks import datasets, listing, reproduce
from benchmarks.cli import main
from benchmarks.errors import UsageError

# A handful of intents; "Transfer" sorts before the lowercase names (code point order).
INTENTS = ["weather", "book_flight", "Transfer", "alarm"]
SORTED = ["Transfer", "alarm", "book_flight", "weather"]  # written out by hand
COUNTS = {"train": 5, "val": 2, "test": 3}
OOS_COUNTS = {"oos_train": 2, "oos_val": 1, "oos_test": 2}


def clinc_content(train_per_intent: int = 5, oos: bool = True) -> dict[str, list]:
    """The layout of data_full.json: split -> list of [text, intent] pairs."""
    content = {}
    for split, count in {**COUNTS, "train": train_per_intent}.items():
        content[split] = [
            [f"{intent.lower()} {split} utterance {i}", intent]
            for i in range(count)
            for intent in INTENTS
        ]
    if oos:
        for split, count in OOS_COUNTS.items():
            content[split] = [[f"out of scope {split} {i}", "oos"] for i in range(count)]
    return content


def write_clinc(folder: Path, name: str = "data_full.json", **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(clinc_content(**kwargs)), encoding="utf-8")
    return path


def clinc150(root: Path, **options) -> datasets.Data:
    table = {
        "name": "clinc150",
        "root": str(root),
        "download": False,
        "verify_checksums": False,
        "variant": "full",
        "include_oos": False,
    }
    return datasets.load({**table, **options})


def test_clinc150_reads_the_json_layout_with_ids_by_sorted_name(tmp_path):
    write_clinc(tmp_path)
    data = clinc150(tmp_path)
    assert data.class_names == SORTED and data.is_text and data.name == "clinc150"
    assert len(data.train_inputs) == 20 and len(data.val_inputs) == 8
    assert len(data.test_inputs) == 12
    # The first pairs are (weather, book_flight, Transfer, alarm) utterance 0.
    assert data.train_inputs.items[:2] == (
        "weather train utterance 0",
        "book_flight train utterance 0",
    )
    assert data.train_targets[:4].tolist() == [3, 2, 0, 1]
    assert data.val_targets.tolist() == [3, 2, 0, 1] * 2
    assert np.bincount(data.test_targets).tolist() == [3, 3, 3, 3]
    assert "out of scope" not in " ".join(data.train_inputs.items + data.test_inputs.items)
    assert clinc150(tmp_path).fingerprint == data.fingerprint


def test_include_oos_adds_one_class_named_oos(tmp_path):
    write_clinc(tmp_path)
    data = clinc150(tmp_path, include_oos=True)
    assert data.class_names == ["Transfer", "alarm", "book_flight", "oos", "weather"]
    assert np.bincount(data.train_targets).tolist() == [5, 5, 5, 2, 5]
    assert np.bincount(data.val_targets).tolist() == [2, 2, 2, 1, 2]
    assert np.bincount(data.test_targets).tolist() == [3, 3, 3, 2, 3]


@pytest.mark.bad_input
def test_include_oos_on_a_file_without_oos_splits_is_one_line(tmp_path):
    path = write_clinc(tmp_path, oos=False)
    assert clinc150(tmp_path).num_classes == 4  # fine without out-of-scope samples
    with pytest.raises(UsageError) as error:
        clinc150(tmp_path, include_oos=True)
    message = str(error.value)
    assert "'oos_train'" in message and str(path) in message and "\n" not in message
    assert "dataset.include_oos = false" in message


@pytest.mark.parametrize(("variant", "train_per_intent"), [("small", 3), ("imbalanced", 4)])
def test_variants_read_their_own_file(tmp_path, variant, train_per_intent):
    write_clinc(tmp_path)
    write_clinc(tmp_path, f"data_{variant}.json", train_per_intent=train_per_intent)
    data = clinc150(tmp_path, variant=variant)
    assert len(data.train_targets) == 4 * train_per_intent


@pytest.mark.bad_input
def test_an_unknown_variant_is_refused(tmp_path, capsys):
    write_clinc(tmp_path)
    with pytest.raises(UsageError, match="dataset.variant = 'tiny' is not accepted"):
        clinc150(tmp_path, variant="tiny")
    config = tmp_path / "c.toml"
    config.write_text(f'[dataset]\nname = "clinc150"\nroot = "{tmp_path}"\nvariant = "tiny"\n')
    code = main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"])
    stderr = capsys.readouterr().err
    assert code == 2 and "dataset.variant = 'tiny'" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_fingerprint_covers_texts_and_labels_of_every_split(tmp_path):
    write_clinc(tmp_path / "a")
    reference = clinc150(tmp_path / "a").fingerprint
    for split, change in (("val", "text"), ("val", "label"), ("test", "text")):
        content = clinc_content()
        if change == "text":
            content[split][0][0] += "!"
        else:
            content[split][0][1] = INTENTS[1]
        folder = tmp_path / f"{split}-{change}"
        folder.mkdir()
        (folder / "data_full.json").write_text(json.dumps(content))
        assert clinc150(folder).fingerprint != reference, (split, change)


# ---------------------------------------------------------------------------------------
# SHA-256 and download


@pytest.mark.bad_input
def test_verify_checksums_refuses_a_changed_file_and_accepts_the_pinned_digest(
    tmp_path, monkeypatch
):
    path = write_clinc(tmp_path)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()  # independently of the code
    published = datasets.TEXT_SHA256["clinc150"]["data_full.json"]
    with pytest.raises(UsageError) as error:
        clinc150(tmp_path, verify_checksums=True)
    message = str(error.value)
    assert actual in message and published in message and str(path) in message
    assert datasets.CLINC150_URL.format("data_full.json") in message and "\n" not in message
    assert "verify_checksums = false" in message
    monkeypatch.setitem(datasets.TEXT_SHA256["clinc150"], "data_full.json", actual)
    assert clinc150(tmp_path, verify_checksums=True).num_classes == 4
    assert datasets.file_sha256(path) == actual


def test_the_pinned_urls_name_the_commit_and_the_digests_are_sha256():
    for dataset, files in datasets.TEXT_SHA256.items():
        for name, digest in files.items():
            url = datasets.TEXT_URLS[dataset].format(name)
            assert url.startswith("https://raw.githubusercontent.com/") and url.endswith(name)
            assert len(digest) == 64 and int(digest, 16) >= 0
    assert "/828f8093932c8fe6ca7936c3d2e52903b1c523de/data/" in datasets.CLINC150_URL
    assert "/57ec275d8078af65b7731c2a98be812d844a6d6b/banking_data/" in datasets.BANKING77_URL


@pytest.mark.bad_input
def test_a_missing_file_without_download_names_file_url_and_folder(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(UsageError) as error:
        clinc150(root)
    message = str(error.value)
    assert str(root / "data_full.json") in message and "dataset.download = false" in message
    assert f"{datasets.CLINC150_URL.format('data_full.json')} into {root}" in message
    assert not root.exists()


def serve(monkeypatch, payloads: dict[str, bytes], requested: list[str]) -> None:
    """urlopen that answers the pinned URLs with the given bytes (no network)."""

    def urlopen(url, timeout=None):
        requested.append(url)
        name = url.rsplit("/", 1)[1]
        if name not in payloads:
            raise urllib.error.URLError("no route to host")
        return io.BytesIO(payloads[name])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_download_fetches_checks_and_renames_into_place(tmp_path, monkeypatch):
    payload = json.dumps(clinc_content()).encode()
    digest = hashlib.sha256(payload).hexdigest()
    monkeypatch.setitem(datasets.TEXT_SHA256["clinc150"], "data_full.json", digest)
    requested: list[str] = []
    serve(monkeypatch, {"data_full.json": payload}, requested)
    root = tmp_path / "data" / "clinc150"
    data = clinc150(root, download=True, verify_checksums=True)
    assert requested == [datasets.CLINC150_URL.format("data_full.json")]
    assert data.class_names == SORTED
    assert sorted(p.name for p in root.iterdir()) == ["data_full.json"]  # no temporary left
    assert (root / "data_full.json").read_bytes() == payload
    clinc150(root, download=True, verify_checksums=True)  # present now: not fetched again
    assert len(requested) == 1


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.bad_input
def test_an_altered_download_is_refused_and_leaves_nothing(tmp_path, monkeypatch, existing):
    payload = json.dumps(clinc_content()).encode()
    monkeypatch.setitem(
        datasets.TEXT_SHA256["clinc150"], "data_full.json", hashlib.sha256(payload).hexdigest()
    )
    serve(monkeypatch, {"data_full.json": payload.replace(b"alarm", b"alarn")}, [])
    root = tmp_path / "data" / "clinc150"
    if existing:
        root.mkdir(parents=True)
    with pytest.raises(UsageError) as error:
        clinc150(root, download=True)
    message = str(error.value)
    assert "download failed" in message and "has SHA-256" in message and "\n" not in message
    assert datasets.CLINC150_URL.format("data_full.json") in message
    if existing:
        assert list(root.iterdir()) == []
    else:
        assert not (tmp_path / "data").exists()


@pytest.mark.bad_input
def test_a_failed_download_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, {}, [])
    root = tmp_path / "data"
    with pytest.raises(UsageError) as error:
        datasets.load({"name": "banking77", "root": str(root), "download": True,
                       "verify_checksums": True})  # fmt: skip
    assert "no route to host" in str(error.value) and "train.csv" in str(error.value)
    assert not root.exists()


# ---------------------------------------------------------------------------------------
# BANKING77 and the `text` dataset


BANKING_ROWS = [
    ("I am still waiting on my card?", "card_arrival"),
    ('How do I "top up", quickly?', "top_up"),  # quotes and a comma, as csv writes them
    ("My card hasn't arrived", "card_arrival"),
    ("Refund me, please", "Refund_not_showing_up"),
    ("top up failed again", "top_up"),
    ("where is my refund", "Refund_not_showing_up"),
]


def csv_bytes(header: str, rows, delimiter: str = ",", newline: str = "\r\n") -> bytes:
    """Rows as the published CSVs are written (RFC 4180 quoting, CRLF line ends)."""
    lines = [header]
    for fields in rows:
        quoted = []
        for field in fields:
            if any(c in field for c in f'"{delimiter}\n'):
                field = '"' + field.replace('"', '""') + '"'
            quoted.append(field)
        lines.append(delimiter.join(quoted))
    return (newline.join(lines) + newline).encode()


def write_banking(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_bytes(csv_bytes("text,category", BANKING_ROWS))
    (root / "test.csv").write_bytes(csv_bytes("text,category", BANKING_ROWS[:3]))


def banking77(root: Path, **options) -> datasets.Data:
    table = {"name": "banking77", "root": str(root), "download": False, "verify_checksums": False}
    return datasets.load({**table, **options})


def test_banking77_reads_the_csv_layout(tmp_path, monkeypatch):
    write_banking(tmp_path)
    data = banking77(tmp_path)
    assert data.class_names == ["Refund_not_showing_up", "card_arrival", "top_up"]
    assert data.train_inputs.items[1] == 'How do I "top up", quickly?'
    assert data.train_targets.tolist() == [1, 2, 1, 0, 2, 0]
    assert data.test_targets.tolist() == [1, 2, 1]
    assert data.val_inputs is None and data.val_targets is None
    with pytest.raises(UsageError, match="has SHA-256"):
        banking77(tmp_path, verify_checksums=True)
    for name in ("train.csv", "test.csv"):
        digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        monkeypatch.setitem(datasets.TEXT_SHA256["banking77"], name, digest)
    assert banking77(tmp_path, verify_checksums=True).fingerprint == data.fingerprint


def text(root: Path, **options) -> datasets.Data:
    table = {
        "name": "text",
        "root": str(root),
        "train": "",
        "test": "",
        "val": "",
        "format": "auto",
        "text_column": "text",
        "label_column": "label",
    }
    return datasets.load({**table, **options})


ROWS = [("good morning", "greet"), ("bye now", "leave"), ("hello there", "greet"),
        ("see you", "leave"), ("what time is it", "time")]  # fmt: skip


def jsonl_bytes(rows, text_key: str = "text", label_key: str = "label") -> bytes:
    return "".join(json.dumps({text_key: t, label_key: y}) + "\n" for t, y in rows).encode()


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_text_reads_csv_tsv_and_jsonl_with_a_val_split(tmp_path, kind):
    def payload(rows):
        if kind == "jsonl":
            return jsonl_bytes(rows)
        return csv_bytes("id,text,label".replace(",", "\t" if kind == "tsv" else ","),
                         [(str(i), t, y) for i, (t, y) in enumerate(rows)],
                         "\t" if kind == "tsv" else ",", "\n")  # fmt: skip

    (tmp_path / f"train.{kind}").write_bytes(payload(ROWS))
    (tmp_path / f"test.{kind}").write_bytes(payload(ROWS[:3]))
    (tmp_path / f"dev.{kind}").write_bytes(payload(ROWS[3:]))
    data = text(tmp_path, train=f"train.{kind}", test=f"test.{kind}", val=f"dev.{kind}")
    assert data.class_names == ["greet", "leave", "time"]
    assert data.train_targets.tolist() == [0, 1, 0, 1, 2]
    assert data.test_inputs.items == ("good morning", "bye now", "hello there")
    assert data.val_targets.tolist() == [1, 2]
    assert data.val_inputs.items == ("see you", "what time is it")
    # An absolute path and an explicit format read the same file under another name.
    (tmp_path / "train.data").write_bytes(payload(ROWS))
    same = text(tmp_path / "elsewhere", train=str(tmp_path / "train.data"),
                test=str(tmp_path / f"test.{kind}"), val=str(tmp_path / f"dev.{kind}"),
                format=kind)  # fmt: skip
    assert same.fingerprint == data.fingerprint


def test_text_columns_are_options_and_integer_labels_sort_as_numbers(tmp_path):
    rows = [(f"sentence {i}", str(label)) for i, label in enumerate([10, 2, 1, 2, 10, 1])]
    (tmp_path / "train.jsonl").write_bytes(
        jsonl_bytes([(t, int(y)) for t, y in rows], "utterance", "intent")
    )
    (tmp_path / "test.csv").write_bytes(csv_bytes("utterance,intent", rows[:3]))
    data = text(tmp_path, train="train.jsonl", test="test.csv", text_column="utterance",
                label_column="intent")  # fmt: skip
    assert data.class_names == ["1", "2", "10"]
    assert data.train_targets.tolist() == [2, 1, 0, 1, 2, 0]
    assert data.test_targets.tolist() == [2, 1, 0]


# ---------------------------------------------------------------------------------------
# Bad input: one line naming the file (and the line), nothing written


BAD_FILES = {
    "missing column": ("train.csv", b"sentence,label\nhi,greet\n", "no column 'text'"),
    "missing label column": ("train.csv", b"text,intent\nhi,greet\n", "no column 'label'"),
    "columns named": ("train.csv", b"text,intent\nhi,greet\n", "columns ['text', 'intent']"),
    "empty text": ("train.csv", b"text,label\nhi,greet\n  ,leave\n", "line 3: empty text"),
    "empty label": ("train.csv", b"text,label\nhi,\n", "line 2: empty label"),
    "field count": ("train.csv", b"text,label\nhi, there,greet\n", "line 2 has 3 fields"),
    "bad quoting": ("train.csv", b'text,label\n"hi" x,greet\n', "line 2 is not valid CSV"),
    "no header": ("train.csv", b"", "no header row"),
    "not utf-8": ("train.csv", b"text,label\nhi,greet\ncaf\xe9,greet\n", "line 3 is not UTF-8"),
    "jsonl syntax": ("train.jsonl", b'{"text": "hi", "label": "a"}\n{"text": hi}\n',
                     "line 2 is not JSON"),
    "jsonl not object": ("train.jsonl", b'["hi", "a"]\n', "line 1 is list"),
    "jsonl key": ("train.jsonl", b'{"sentence": "hi", "label": "a"}\n',
                  "line 1 has no key 'text'"),
    "jsonl label type": ("train.jsonl", b'{"text": "hi", "label": 1.5}\n', "is 1.5"),
    "empty split": ("train.csv", b"text,label\n", "the train split has no samples"),
    "suffix": ("train.txt", b"text,label\nhi,greet\n", "from its suffix"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.bad_input
def test_a_bad_text_file_is_one_line_naming_file_and_line(tmp_path, case):
    name, payload, fragment = BAD_FILES[case]
    (tmp_path / name).write_bytes(payload)
    (tmp_path / "test.csv").write_bytes(b"text,label\nhello,greet\n")
    with pytest.raises(UsageError) as error:
        text(tmp_path, train=name, test="test.csv")
    message = str(error.value)
    assert fragment in message and "\n" not in message
    if case not in ("empty split",):
        assert name in message


@pytest.mark.bad_input
def test_a_test_class_without_training_samples_is_refused(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"text,label\nhello,greet\nbye,leave\n")
    (tmp_path / "test.csv").write_bytes(b"text,label\nhello,greet\nwhat time,time\n")
    with pytest.raises(UsageError) as error:
        text(tmp_path, train="train.csv", test="test.csv")
    message = str(error.value)
    assert "test.csv: line 3: class 'time' has no training samples" in message


@pytest.mark.bad_input
def test_missing_files_and_options(tmp_path):
    with pytest.raises(UsageError, match='needs dataset.train = "train.csv"'):
        text(tmp_path)
    (tmp_path / "train.csv").write_bytes(b"text,label\nhi,a\n")
    with pytest.raises(UsageError) as error:
        text(tmp_path, train="train.csv", test="nope.csv")
    assert f"dataset.test = {str(tmp_path / 'nope.csv')!r} is not a file" in str(error.value)


BAD_CLINC = {
    "syntax": (b'{"train": [["hi", "a"],\n ["x" "b"]]}', "line 2 is not JSON"),
    "not utf-8": (b'{"train": [["caf\xe9", "a"]]}', "line 1 is not UTF-8"),
    "no split": (b'{"train": [["hi", "a"]], "test": []}', "has no split 'val'"),
    "pair": (b'{"train": [["hi"]], "val": [], "test": []}', "train[0] is ['hi']"),
    "empty text": (b'{"train": [["", "a"]], "val": [], "test": []}', "train[0]: empty text"),
    "unseen intent": (b'{"train": [["hi", "a"]], "val": [["yo", "b"]], "test": [["x", "a"]]}',
                      "val[0]: class 'b' has no training samples"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CLINC))
@pytest.mark.bad_input
def test_a_bad_clinc150_file_is_one_line(tmp_path, case, capsys):
    payload, fragment = BAD_CLINC[case]
    (tmp_path / "data_full.json").write_bytes(payload)
    with pytest.raises(UsageError) as error:
        clinc150(tmp_path)
    assert fragment in str(error.value) and "data_full.json" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.bad_input
def test_the_cli_stops_on_a_bad_text_file_with_exit_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "train.csv").write_bytes(b"text,label\nhello,greet\n,leave\n")
    (tmp_path / "test.csv").write_bytes(b"text,label\nhello,greet\n")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[dataset]\nname = "text"\nroot = "{tmp_path}"\ntrain = "train.csv"\ntest = "test.csv"\n'
    )
    code = main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"])
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1 and "line 3: empty text" in stderr
    assert not (tmp_path / "out").exists()


def test_list_datasets_shows_the_text_datasets_and_their_options():
    text_listing = listing.datasets_()
    for fragment in (
        "  clinc150: CLINC150",
        "  banking77: BANKING77",
        "  text: your own",
        "include_oos = False",
        "variant = 'full'",
        "label_column = 'label'",
    ):
        assert fragment in text_listing


def test_reproduce_does_not_flag_unchecked_text_files_but_still_flags_pickles():
    for name in ("clinc150", "banking77"):
        record = {"config": {"dataset": {"name": name, "verify_checksums": False}}}
        assert reproduce.code_fields(record) == []
    record = {"config": {"dataset": {"name": "cifar100", "verify_checksums": False}}}
    assert len(reproduce.code_fields(record)) == 1


# ---------------------------------------------------------------------------------------
# The real files, when they are here


@pytest.mark.skipif(
    not os.environ.get("HEADBENCH_CLINC150_ROOT"),
    reason="HEADBENCH_CLINC150_ROOT is not set (the folder with the published data_*.json)",
)
def test_the_real_clinc150_files():
    root = Path(os.environ["HEADBENCH_CLINC150_ROOT"])
    data = clinc150(root, verify_checksums=True)
    assert data.num_classes == 150
    for targets, count in ((data.train_targets, 100), (data.val_targets, 20),
                           (data.test_targets, 30)):  # fmt: skip
        assert np.bincount(targets).tolist() == [count] * 150
    with_oos = clinc150(root, verify_checksums=True, include_oos=True)
    assert with_oos.num_classes == 151
    oos = with_oos.class_names.index("oos")
    assert [int((t == oos).sum()) for t in (with_oos.train_targets, with_oos.val_targets,
                                            with_oos.test_targets)] == [100, 100, 1000]  # fmt: skip
    for variant, train in (("small", 7500), ("imbalanced", 10525)):
        assert len(clinc150(root, verify_checksums=True, variant=variant).train_targets) == train


@pytest.mark.skipif(
    not os.environ.get("HEADBENCH_BANKING77_ROOT"),
    reason="HEADBENCH_BANKING77_ROOT is not set (the folder with the published train.csv, "
    "test.csv)",
)
def test_the_real_banking77_files():
    data = banking77(Path(os.environ["HEADBENCH_BANKING77_ROOT"]), verify_checksums=True)
    assert (len(data.train_targets), len(data.test_targets), data.num_classes) == (
        10003,
        3080,
        77,
    )
    assert len(np.unique(data.test_targets)) == 77


def test_an_interrupted_download_leaves_nothing_and_stays_an_interrupt(tmp_path, monkeypatch):
    class Interrupted(io.BytesIO):
        def read(self, size=-1):
            if self.tell():
                raise KeyboardInterrupt
            return super().read(4)  # a first chunk is written, then Ctrl-C

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Interrupted(b"{}" * 9))
    root = tmp_path / "data" / "clinc150"
    with pytest.raises(KeyboardInterrupt):
        clinc150(root, download=True)
    assert not (tmp_path / "data").exists()
