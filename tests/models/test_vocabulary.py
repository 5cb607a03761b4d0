"""Pairing by meaning: vocabularies compared id by id over the ids either side can emit, special tokens, and the chat
template's rendering of the probe request."""

from __future__ import annotations

from covspec.models.vocabulary import PROBE_PROMPT, Vocabulary, first_difference, vocabulary_of


def _vocab(tokens, special=(), probe=(1, 2, 3)) -> Vocabulary:
    return Vocabulary(tuple(tokens), frozenset(special), tuple(probe))


def test_equal_vocabularies_agree_and_a_wider_drafter_is_cut_to_the_target() -> None:
    target = _vocab(["a", "b", "<eos>"], special={2})
    assert first_difference(target, target) is None
    # the drafter's extra ids are never drafted (its logits are cut to the target's width)
    assert first_difference(_vocab(["a", "b", "<eos>", "extra"], special={2}), target) is None


def test_the_first_differing_id_is_named_with_both_tokens() -> None:
    target = _vocab(["a", "b", "c", "d"])
    assert first_difference(_vocab(["a", "b", "x", "y"]), target) == (
        "token id 2 is 'x' for the drafter but 'c' for the target"
    )


def test_an_id_the_target_can_emit_and_the_drafter_lacks_is_a_difference() -> None:
    target = _vocab(["a", "b", "c"])
    assert (
        first_difference(_vocab(["a", "b"]), target) == "token id 2 is no token for the drafter but 'c' for the target"
    )
    # padding rows (no token) on both sides agree
    assert first_difference(_vocab(["a", None, None]), _vocab(["a", None, None])) is None


def test_a_token_special_on_one_side_only_is_a_difference() -> None:
    message = first_difference(_vocab(["a", "<im_end>"], special={1}), _vocab(["a", "<im_end>"]))
    assert message == "token id 1 ('<im_end>') is a special token for the drafter only"


def test_a_chat_template_rendering_differently_is_named_at_its_first_token() -> None:
    tokens = ["<s>", "USER", ":", "SYSTEM"]
    message = first_difference(_vocab(tokens, probe=(0, 1, 2)), _vocab(tokens, probe=(0, 3, 2)))
    assert message is not None
    assert "at token 1" in message and "id 1 ('USER')" in message and "id 3 ('SYSTEM')" in message
    assert PROBE_PROMPT in message
    shorter = first_difference(_vocab(tokens, probe=(0, 1)), _vocab(tokens, probe=(0, 1, 2)))
    assert shorter is not None and "the drafter has the end" in shorter


def test_vocabulary_of_a_real_tokenizer_round_trips_and_pads_to_the_logits_width() -> None:
    from covspec.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer("qwen2_vl")
    vocab = vocabulary_of(tokenizer, len(tokenizer) + 3, probe_ids=[5, 6])
    assert vocab.width == len(tokenizer) + 3 and vocab.tokens[-3:] == (None, None, None)
    assert vocab.tokens[tokenizer.convert_tokens_to_ids("<|im_end|>")] == "<|im_end|>"
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") in vocab.special
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab
