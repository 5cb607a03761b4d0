"""The pairing file: its format round trip (dict, file), its refusals (another format, a malformed file, another
drafter or target), the per-link lookup and what `run` applies (command-line flags win). Then the full pair check's
extra rules (end-of-sequence ids, named special tokens, image handling) on hand-built fingerprints and vocabularies."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest

from covspec.errors import ConfigError, IncompatiblePairError
from covspec.models.base import ModelFingerprint
from covspec.models.vocabulary import Vocabulary
from covspec.protocol import PROTOCOL_VERSION, VerifyMode
from covspec.runtime_device.loop import GenerationConfig
from covspec.runtime_device.pairing import check_pair_fully
from covspec.runtime_device.pairing_file import FORMAT, MEASURED, Identity, LinkChoice, Pairing
from covspec.spec.cost_model import EnergyInputs
from covspec.spec.policy import PolicyKind, WarmStart

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "image_token": "<image>"}
DRAFTER = ModelFingerprint("drafter-a", "llava", 8, "hash-1", dict(SPECIAL), (2,))
TARGET_INFO = {"protocol_version": PROTOCOL_VERSION,
               "model": {"name": "target-b", "family": "llava", "vocab_size": 8, "tokenizer_hash": "hash-1",
                         "special_tokens": dict(SPECIAL), "eos_token_ids": [2], "chat_probe": [1, 5, 6],
                         "accepts_images": True, "image_token_id": 4}}  # fmt: skip


def _choice(k: int, rtt_s: float) -> LinkChoice:
    return LinkChoice(rtt_s, 1e6, 2e6, k, 40.0 + k, 10.0, (40.0 + k) / 10.0, True)


def _pairing(**changes) -> Pairing:
    pairing = Pairing(
        drafter=Identity.of(DRAFTER),
        target=Identity.from_info(TARGET_INFO),
        edge_url="http://127.0.0.1:8000",
        checks=("protocol", "vocabulary"),
        verify_mode=VerifyMode.COMPACT,
        policy=PolicyKind.COST,
        max_burst=64,
        warm=WarmStart((0.9, 0.8, 0.7), 0.002, 0.01, 0.001, 0.004),
        links={MEASURED: _choice(5, 0.004), "lte": _choice(7, 0.054)},
        energy=EnergyInputs(draft_w=6.0, wait_w=2.0),
        measurements={"acceptance": {"rounds": 12}},
    )
    return replace(pairing, **changes)


def test_the_file_round_trips_through_dict_and_disk(tmp_path) -> None:
    pairing = _pairing()
    data = pairing.to_dict()
    assert data["format"] == FORMAT == 1 and data["recommendation"]["links"]["lte"]["draft_len"] == 7
    json.dumps(data)  # JSON-ready
    assert Pairing.from_dict(data) == pairing
    path = pairing.save(tmp_path / "sub" / "pairing.json")
    assert Pairing.load(path) == pairing
    assert Pairing.load(_pairing(energy=None).save(tmp_path / "no-energy.json")).energy is None


def test_other_formats_and_malformed_files_are_refused(tmp_path) -> None:
    data = _pairing().to_dict()
    with pytest.raises(ConfigError, match="not a pairing file of format 1 .found format 2"):
        Pairing.from_dict({**data, "format": 2})
    del data["recommendation"]["warm_start"]
    with pytest.raises(ConfigError, match="malformed: KeyError"):
        Pairing.from_dict(data)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the pairing file"):
        Pairing.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="measured link"):
        _pairing(links={"lte": _choice(7, 0.054)})


def test_a_file_measured_for_another_pair_is_refused_naming_the_difference() -> None:
    pairing = _pairing()
    pairing.check_identity(DRAFTER, TARGET_INFO)  # the very pair: accepted
    other_drafter = replace(DRAFTER, tokenizer_hash="hash-9")
    with pytest.raises(ConfigError, match="another drafter: its tokenizer_hash is 'hash-1' there, 'hash-9' here"):
        pairing.check_identity(other_drafter, TARGET_INFO)
    renamed = {**TARGET_INFO, "model": {**TARGET_INFO["model"], "name": "target-c"}}
    with pytest.raises(ConfigError, match="another target: its name is 'target-b' there, 'target-c' here"):
        pairing.check_identity(DRAFTER, renamed)
    with pytest.raises(ConfigError, match="another target"):
        pairing.apply(GenerationConfig(), DRAFTER, renamed)


def test_each_link_gets_its_own_draft_length_and_round_trip() -> None:
    pairing = _pairing()
    assert pairing.link_for("lte") == ("lte", pairing.links["lte"])
    assert pairing.link_for(None) == pairing.link_for("cell-edge") == (MEASURED, pairing.links[MEASURED])
    assert pairing.warm_for("lte").rtt_s == 0.054 and pairing.warm_for(None).rtt_s == 0.004
    assert pairing.warm_for("lte").accept_probs == pairing.warm.accept_probs
    assert pairing.settings("lte")["draft_len"] == 7 and pairing.settings(None)["draft_len"] == 5


def test_apply_sets_the_files_settings_and_keeps_explicit_flags() -> None:
    pairing = _pairing()
    base = GenerationConfig(draft_len=3, verify_mode=VerifyMode.VANILLA, policy=PolicyKind.FIXED)
    config, applied = pairing.apply(base, DRAFTER, TARGET_INFO, "lte")
    assert (config.draft_len, config.verify_mode, config.policy, config.max_burst) == (7, VerifyMode.COMPACT,
                                                                                       PolicyKind.COST, 64)  # fmt: skip
    assert config.warm == pairing.warm_for("lte") and config.energy == pairing.energy
    assert applied["link"] == "lte" and applied["set"]["draft_len"] == 7 and applied["kept"] == []
    assert applied["set"]["warm"]["rtt_s"] == 0.054 and applied["set"]["verify_mode"] == "compact"
    json.dumps(applied)
    config, applied = pairing.apply(base, DRAFTER, TARGET_INFO, None, explicit={"draft_len", "verify_mode"})
    assert (config.draft_len, config.verify_mode, config.policy) == (3, VerifyMode.VANILLA, PolicyKind.COST)
    assert applied["kept"] == ["draft_len", "verify_mode"] and "draft_len" not in applied["set"]


# ---- the full pair check --------------------------------------------------------------------------------------------

TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>", "a", "b", "c")


@dataclass
class FakeEngine:
    """What check_pair_fully reads of a drafter engine."""

    fingerprint: ModelFingerprint
    vocabulary: Vocabulary
    accepts_images: bool = True
    image_token_id: int | None = 4


class NoVocabularyClient:
    """The tokenizer hashes are equal in these cases: the target's vocabulary is never fetched."""

    def target_vocabulary(self, tokenizer_hash: str) -> Vocabulary:
        raise AssertionError("fetched the target's vocabulary")


def _engine(**changes) -> FakeEngine:
    vocabulary = Vocabulary(TOKENS, frozenset({0, 1, 2, 3, 4}), (1, 5, 6))
    return replace(FakeEngine(DRAFTER, vocabulary), **changes)


def _info(**model) -> dict:
    return {**TARGET_INFO, "model": {**TARGET_INFO["model"], **model}}


def test_the_full_check_passes_a_pair_that_belongs_together() -> None:
    passed = check_pair_fully(_engine(), TARGET_INFO, NoVocabularyClient())
    assert passed == ["protocol", "vocabulary", "chat template", "end-of-sequence ids", "special token ids",
                      "image handling"]  # fmt: skip
    text_only = check_pair_fully(_engine(accepts_images=False, image_token_id=None), TARGET_INFO, NoVocabularyClient())
    assert text_only[-1] == "image handling (text-only drafter)"  # a text LM may draft for a VLM


@pytest.mark.parametrize(
    ("engine", "info", "message"),
    [
        (_engine(), _info(image_token_id=7), "image token id: drafter 4, target 7"),
        (_engine(image_token_id=5), TARGET_INFO, "image token id: drafter 5, target 4"),
        (
            _engine(),
            _info(accepts_images=False, image_token_id=None),
            "image handling: drafter reads images, target is text-only",
        ),
        (_engine(), _info(eos_token_ids=[2, 3]), "end-of-sequence token ids: drafter [2], target [2, 3]"),
        (_engine(), _info(special_tokens={**SPECIAL, "pad_token": "<unk>"}), "pad token id: drafter 3, target 0"),
        (_engine(), _info(chat_probe=[1, 5, 7]), "chat templates render the request differently: at token 2"),
    ],
)
def test_the_full_check_names_the_first_difference(engine, info, message) -> None:
    with pytest.raises(IncompatiblePairError, match="do not pair") as caught:
        check_pair_fully(engine, info, NoVocabularyClient())
    assert message in str(caught.value)


def test_an_unstated_image_token_id_is_read_from_the_targets_placeholder() -> None:
    info = _info(image_token_id=None, special_tokens={**SPECIAL, "image_token": "c"})
    with pytest.raises(IncompatiblePairError, match="image token id: drafter 4, target 7"):
        check_pair_fully(_engine(), info, NoVocabularyClient())
