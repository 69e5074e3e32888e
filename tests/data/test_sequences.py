"""Padding and packing of token records, the divlab_text builder, and both streamed.

References are written here independently: padding and first-fit packing as
plain Python loops over lists, byte tokens from ``str.encode``, character
tokens from ``sorted(set(text))``, and streamed batches from the numpy gather
of the documented ``np.random.default_rng([seed, epoch]).permutation(n)``.
"""
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from divlab import data
from divlab.data import sequences
from divlab.data import text_builder

LINES_A = ["hello world", "", "zebra é ü", "a"]
LINES_B = ["line with a tab\tinside", "x" * 40, "€uro 12", "", "last one"]


def _ragged(seed, count, max_length, vocab=50):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, vocab, size=rng.integers(0, max_length + 1)) for _ in range(count)]


def _padded_reference(seqs, length, pad_id):
  tokens = [[pad_id] * length for _ in seqs]
  mask = [[False] * length for _ in seqs]
  for i, seq in enumerate(seqs):
    for t, value in enumerate(list(seq)[:length]):
      tokens[i][t], mask[i][t] = int(value), True
  return np.array(tokens), np.array(mask)


def _packed_reference(seqs, length, num_rows):
  """Rows as Python lists of (token, segment, position); first fit in order."""
  rows = [[] for _ in range(num_rows)]
  counts = [0] * num_rows
  placed = []
  for seq in seqs:
    seq = [int(v) for v in list(seq)[:length]]
    if not seq:
      placed.append(None)
      continue
    target = next((r for r in range(num_rows) if len(rows[r]) + len(seq) <= length), None)
    placed.append(target)
    if target is None:
      continue
    counts[target] += 1
    rows[target] += [(v, counts[target], p) for p, v in enumerate(seq)]
  out = np.zeros((3, num_rows, length), dtype=np.int64)
  for r, row in enumerate(rows):
    for t, triple in enumerate(row):
      out[:, r, t] = triple
  return out, placed


@pytest.mark.parametrize("length, pad_id", [(7, 0), (12, -1), (1, 3)])
def test_padding_matches_the_reference(length, pad_id):
  seqs = _ragged(0, 9, 15)
  batch = sequences.pad_sequences(seqs, length, pad_id=pad_id)
  tokens, mask = _padded_reference(seqs, length, pad_id)
  assert batch["tokens"].dtype == np.int32 and batch["mask"].dtype == bool
  np.testing.assert_array_equal(batch["tokens"], tokens)
  np.testing.assert_array_equal(batch["mask"], mask)


def test_padding_the_documented_example_and_lists():
  batch = sequences.pad_sequences([[5, 6, 7], [8]], 4)
  np.testing.assert_array_equal(batch["tokens"], [[5, 6, 7, 0], [8, 0, 0, 0]])
  np.testing.assert_array_equal(batch["mask"], [[1, 1, 1, 0], [1, 0, 0, 0]])
  empty = sequences.pad_sequences([[], []], 3)
  assert not empty["mask"].any() and not empty["tokens"].any()


@pytest.mark.parametrize("length, num_rows", [(16, 3), (10, 6), (40, 2)])
def test_packing_matches_first_fit_reference(length, num_rows):
  seqs = _ragged(1, 12, 14)
  batch = sequences.pack_sequences(seqs, length, num_rows)
  expected, _ = _packed_reference(seqs, length, num_rows)
  for key in ("tokens", "segment_ids", "positions"):
    assert batch[key].dtype == np.int32 and batch[key].shape == (num_rows, length)
  np.testing.assert_array_equal(batch["tokens"], expected[0])
  np.testing.assert_array_equal(batch["segment_ids"], expected[1])
  np.testing.assert_array_equal(batch["positions"], expected[2])
  np.testing.assert_array_equal(batch["mask"], expected[1] > 0)


def test_every_packed_record_reads_back_whole_and_drops_are_reported():
  seqs = _ragged(2, 20, 9)
  batch = sequences.pack_sequences(seqs, 12, 5)
  _, placed = _packed_reference(seqs, 12, 5)
  recovered = {}
  for row in range(5):
    for segment in range(1, batch["segment_ids"][row].max() + 1):
      where = batch["segment_ids"][row] == segment
      recovered.setdefault(row, []).append(batch["tokens"][row][where])
      np.testing.assert_array_equal(batch["positions"][row][where], np.arange(where.sum()))
  kept = [np.asarray(s) for s, r in zip(seqs, placed) if r is not None]
  assert sum(len(v) for v in recovered.values()) == len(kept)
  in_row_order = [np.asarray(s) for r in range(5) for s, p in zip(seqs, placed) if p == r]
  got = [t for r in range(5) for t in recovered.get(r, [])]
  for a, b in zip(got, in_row_order):
    np.testing.assert_array_equal(a, b)
  assert sum(batch["segment_ids"].max(axis=1)) == len(kept)
  assert any(p is None and len(s) for s, p in zip(seqs, placed))  # some were dropped
  with pytest.raises(ValueError, match="num_rows"):
    sequences.pack_sequences(seqs, 12, 5, drop_overflow=False)


def test_packing_the_documented_example():
  batch = sequences.pack_sequences([[5, 6, 7], [8, 9], [4]], 4, 2)
  np.testing.assert_array_equal(batch["tokens"], [[5, 6, 7, 4], [8, 9, 0, 0]])
  np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 2], [1, 1, 0, 0]])
  np.testing.assert_array_equal(batch["positions"], [[0, 1, 2, 0], [0, 1, 0, 0]])


@pytest.mark.parametrize("call, argument", [
    (lambda: sequences.pad_sequences([], 4), "sequences"),
    (lambda: sequences.pad_sequences([[1.5, 2.0]], 4), "sequences"),
    (lambda: sequences.pad_sequences([[[1, 2]]], 4), "sequences"),
    (lambda: sequences.pad_sequences([[1, 2, 3]], 2, truncate=False), "truncate"),
    (lambda: sequences.pad_sequences([[1]], 0), "length"),
    (lambda: sequences.pack_sequences([[1]], 4, 0), "num_rows"),
    (lambda: sequences.pad_collate(-3), "length"),
])
def test_bad_input_names_the_argument(call, argument):
  with pytest.raises(ValueError, match=argument):
    call()


def test_collates_pickle_and_match_the_functions():
  records = [{"tokens": np.array(s)} for s in _ragged(3, 6, 8)]
  seqs = [r["tokens"] for r in records]
  pad = pickle.loads(pickle.dumps(sequences.pad_collate(6, pad_id=2)))
  pack = pickle.loads(pickle.dumps(sequences.pack_collate(10, 3)))
  for got, want in ((pad(records), sequences.pad_sequences(seqs, 6, pad_id=2)),
                    (pack(records), sequences.pack_sequences(seqs, 10, 3))):
    assert got.keys() == want.keys()
    for key in got:
      np.testing.assert_array_equal(got[key], want[key])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  folder = tmp_path_factory.mktemp("corpus")
  (folder / "b.txt").write_text("\n".join(LINES_B) + "\n", encoding="utf-8")
  (folder / "nested").mkdir()
  (folder / "nested" / "a.txt").write_text("\n".join(LINES_A), encoding="utf-8")
  (folder / "ignored.md").write_text("not text records\n", encoding="utf-8")
  # Sorted paths: b.txt before nested/a.txt.
  return folder, [line for line in LINES_B + LINES_A if line]


@pytest.fixture(scope="module")
def text_dir(corpus, tmp_path_factory):
  folder, _ = corpus
  directory = tmp_path_factory.mktemp("tfds_text")
  for level in ("byte", "char"):
    data.prepare_text(folder, level=level, data_dir=directory)
  return directory


def test_byte_records_are_the_utf8_of_each_line(corpus, text_dir):
  _, lines = corpus
  split = data.TfdsSplit("divlab_text/bytes", "train", data_dir=text_dir,
                         collate=lambda records: {"tokens": [r["tokens"] for r in records]})
  assert len(split) == len(lines)
  for line, tokens in zip(lines, split.read(np.arange(len(lines)))["tokens"]):
    assert tokens.dtype == np.int32
    assert list(tokens) == list(line.encode("utf-8"))
    assert text_builder.decode(tokens) == line


def test_char_records_rank_in_the_sorted_character_set(corpus, text_dir):
  _, lines = corpus
  vocabulary = "".join(sorted(set("".join(lines))))
  info = tfds.builder("divlab_text/chars", data_dir=text_dir).info
  assert info.metadata["vocabulary"] == vocabulary
  split = data.TfdsSplit("divlab_text/chars", "train", data_dir=text_dir,
                         collate=lambda records: {"tokens": [r["tokens"] for r in records]})
  for line, tokens in zip(lines, split.read(np.arange(len(lines)))["tokens"]):
    assert list(tokens) == [vocabulary.index(c) for c in line]
    assert text_builder.decode(tokens, level="char", vocabulary=vocabulary) == line


@pytest.mark.parametrize("layout", ["pad", "pack"])
def test_streamed_text_batches_are_the_gather_of_the_documented_order(corpus, text_dir,
                                                                      layout):
  _, lines = corpus
  tokens = [list(line.encode("utf-8")) for line in lines]
  collate = (sequences.pad_collate(16) if layout == "pad"
             else sequences.pack_collate(16, 2))
  split = data.TfdsSplit("divlab_text/bytes", "train", data_dir=text_dir, collate=collate)
  # Two processes, global batch 4: process 1 reads rows 2:4 of every global batch.
  loader = data.GrainLoader(split, 4, seed=4, process_index=1, process_count=2)
  per_epoch = len(lines) // 4
  for epoch in range(2):
    order = np.random.default_rng([4, epoch]).permutation(len(lines))
    for b in range(per_epoch):
      indices = order[b * 4:(b + 1) * 4][2:4]
      picked = [tokens[i] for i in indices]
      got = next(loader)
      if layout == "pad":
        expected_tokens, expected_mask = _padded_reference(picked, 16, 0)
        np.testing.assert_array_equal(got["tokens"], expected_tokens)
        np.testing.assert_array_equal(got["mask"], expected_mask)
      else:
        expected, _ = _packed_reference(picked, 16, 2)
        for key, want in zip(("tokens", "segment_ids", "positions"), expected):
          np.testing.assert_array_equal(got[key], want)
  loader.close()


def test_prepare_text_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="level"):
    data.prepare_text(tmp_path, level="word")
  with pytest.raises(ValueError, match="folder"):
    data.prepare_text(tmp_path / "missing")
  with pytest.raises(ValueError, match="folder"):
    data.prepare_text(tmp_path)  # no *.txt files
  with pytest.raises(ValueError, match="vocabulary"):
    text_builder.decode([1], level="char")
  with pytest.raises(ValueError, match="tokens"):
    text_builder.decode([300])


def test_text_split_size_estimate_scales_with_its_slice(corpus, text_dir):
  _, lines = corpus
  raw = tfds.data_source("divlab_text/bytes", split="train", data_dir=str(text_dir),
                         deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  serialized = sum(len(record) for record in raw.__getitems__(list(range(len(lines)))))
  whole = data.TfdsSplit("divlab_text/bytes", "train", data_dir=text_dir).estimated_bytes()
  half = data.TfdsSplit("divlab_text/bytes", "train[:50%]", data_dir=text_dir)
  assert whole == serialized
  assert half.estimated_bytes() == serialized * len(half) // len(lines) > 0
