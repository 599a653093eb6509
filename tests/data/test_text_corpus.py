import math

import numpy as np
import pytest

from trainwell.config import load_config
from trainwell.data.text import encode, is_val_file, load_text
from trainwell.errors import DataError


def cfg_for(path, **kw):
    sets = ["data.source=file", f"data.path='{path}'"] + [f"data.{k}={v}" for k, v in kw.items()]
    return load_config("default", sets).data


def test_file_split_is_tail_and_round_trips(tiny_text):
    corpus = load_text(cfg_for(tiny_text, min_char_count=1, val_fraction=0.1))
    text = tiny_text.read_text()
    cut = int(len(text) * 0.9)
    assert corpus.decode(corpus.train) == text[:cut]
    assert corpus.decode(corpus.val) == text[cut:]
    assert corpus.vocab == sorted(set(text))


def test_cache_is_reused_and_equal(tiny_text):
    a = load_text(cfg_for(tiny_text))
    b = load_text(cfg_for(tiny_text))
    assert np.array_equal(a.train, b.train) and a.vocab == b.vocab


def test_rare_characters_map_to_unk():
    vocab = ["a", "b", "\ufffd"]
    assert encode("abz", vocab).tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="not in the vocabulary"):
        encode("abz", ["a", "b"])


def test_unigram_baseline_is_entropy_like(tiny_text):
    corpus = load_text(cfg_for(tiny_text))
    assert 2.0 < corpus.unigram_nats < math.log(corpus.vocab_size) + 0.5


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_text(cfg_for(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="only 0 characters"):
        load_text(cfg_for(empty))
    with pytest.raises(DataError, match="needs data.path"):
        load_text(load_config("default", ["data.source=file"]).data)


def test_val_files_are_held_out_by_name():
    names = [f"pkg/mod{i}.py" for i in range(2000)]
    share = sum(is_val_file(n, 0.05) for n in names) / len(names)
    assert 0.03 < share < 0.07
    assert [is_val_file(n, 0.05) for n in names] == [is_val_file(n, 0.05) for n in names]
