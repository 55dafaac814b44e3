"""The seeded example stream: one number is the data position; grouping keeps a permutation."""

from __future__ import annotations

from lorakit.train.sampling import ExampleStream


def test_each_epoch_is_a_seeded_permutation() -> None:
    s = ExampleStream(10, seed=3)
    assert sorted(s.epoch_order(0)) == list(range(10))
    assert s.epoch_order(0) != s.epoch_order(1)
    assert ExampleStream(10, seed=3).epoch_order(1) == s.epoch_order(1)
    assert ExampleStream(10, seed=4).epoch_order(0) != s.epoch_order(0)


def test_take_spans_epochs_without_dropping() -> None:
    s = ExampleStream(7, seed=0)
    stream = s.take(0, 21)
    assert stream[:7] == s.epoch_order(0) and stream[7:14] == s.epoch_order(1)
    assert s.take(5, 4) == stream[5:9]  # resuming at an offset gives the same continuation


def test_group_by_length_batches_similar_lengths() -> None:
    lengths = [(i * 37) % 100 for i in range(400)]
    s = ExampleStream(400, seed=1, batch_size=8, lengths=lengths)
    order = s.epoch_order(0)
    assert sorted(order) == list(range(400))
    spread = [max(lengths[i] for i in order[k:k + 8]) - min(lengths[i] for i in order[k:k + 8])
              for k in range(0, 400, 8)]
    assert sum(spread) / len(spread) < 10  # random batches of 8 would spread ~75
    assert ExampleStream(400, seed=1, batch_size=8, lengths=lengths).epoch_order(0) == order
