"""``lorakit train-many``: many LoRA adapters trained at once over one frozen base.

``runner`` (:func:`train_many`, the mixed loop), ``steps`` (each job's own optimizer step, evaluation,
checkpoint and outputs), ``model`` (the shared base carrying every job's layers), ``batch`` (the
mixed batch and each job's loss) and ``jobs`` (the jobs file).
"""

from lorakit.train.many.runner import train_many

__all__ = ["train_many"]
