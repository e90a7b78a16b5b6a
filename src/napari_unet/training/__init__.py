"""Corrections to a better model: annotations -> samples, targets, augmentation, training, fine-tuning.

``sample`` (the training sample) <- ``annotations`` (samples from an image and its corrected
labels); ``targets`` and ``augment`` feed ``loop`` (the step generator); ``holdout`` (the
held-back score) and ``card`` (the fine-tuned model's card) serve ``finetune``.

May import: ``common``, ``models``, ``engine``.
"""
