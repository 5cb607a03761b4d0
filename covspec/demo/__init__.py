"""The embedded default: synthetic scenes and the tiny trained target/drafter pair (``covspec demo``).

- ``covspec.demo.scenes``: shapes on a plain background with questions only the picture answers (train / held-out).
- ``covspec.demo.pair``: the LLaVA target and the smaller LLaVA drafter (architecture, processor, tokenizer).
- ``covspec.demo.train``: ``TrainConfig``, ``train_pair`` (target by teacher forcing, drafter distilled from it).
- ``covspec.demo.evaluate``: ``evaluate_pair`` (accuracy of each model, AAL and acceptance rate of the pair).
- ``covspec.demo.store``: ``ensure_pair`` (trained on first use, cached under the user cache dir).
- ``covspec.demo.samples``: ``SCENES``, the scenes quantization and TensorRT builds draw on by default.

Submodules import torch and transformers lazily, so importing ``covspec.demo`` itself is cheap.
"""
