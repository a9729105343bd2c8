"""The built-in dataset specs as the dataset configs compose them."""

from __future__ import annotations

import dataclasses

from tests.support.data import spec

# --- specs and errors (no data needed) ------------------------------------------------


def test_shakespeare_vocabulary_is_leafs_80_characters() -> None:
    shakespeare = spec("shakespeare")
    vocabulary = shakespeare.vocabulary
    assert len(vocabulary) == len(set(vocabulary)) == shakespeare.num_classes == 80
    # LEAF's unknown character is the last one, which the text never contains.
    assert vocabulary[-1] == "}" and vocabulary.startswith("\n !")


def test_specs_travel_intact_and_hash_by_content() -> None:
    shakespeare = spec("shakespeare")
    assert dataclasses.replace(shakespeare) == shakespeare
    assert hash(dataclasses.replace(shakespeare)) == hash(shakespeare)
    assert hash(dataclasses.replace(shakespeare, input_shape=[40])) != hash(shakespeare)
