"""NeMo 2 / Megatron: the Megatron backbone (tensor parallel), the FOCUS HyenaModel subclass and its trainer,
conversion and the CPU shims. Importing any of it hides the messages NeMo's stack prints on every run that a
user of this package can do nothing about (see `NOT_ACTIONABLE`); every other message is kept."""

import logging

NOT_ACTIONABLE = (
    # NeMo's llm package, at import: optional subpackages this package does not use
    "The deploy module could not be imported",
    "The evaluate module could not be imported",
    # MegatronStrategy: the adapter's learning rate is set per step by the trainer, there is no LR scheduler
    "Could not copy Trainer's 'max_steps' to LR scheduler's 'max_steps'",
    # Lightning, through NeMo's warning capture: HyenaModel defines a validation step, which the trainer does not run
    "You defined a `validation_step` but have no `val_dataloader`",
)


class NotActionableFilter(logging.Filter):
    """Drops the records of NeMo's logger whose message contains one of `NOT_ACTIONABLE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in NOT_ACTIONABLE)


# NeMo logs (and redirects Python warnings) through the standard logger "nemo_logger"; adding the filter
# before NeMo is imported is enough, whichever of its modules creates the logger first.
if not any(isinstance(f, NotActionableFilter) for f in logging.getLogger("nemo_logger").filters):
    logging.getLogger("nemo_logger").addFilter(NotActionableFilter())
