"""The training pieces both backends share, one floor below the trainers: the schema (`config`), the
per-step schedules (`schedule`), the data (`data`), the checkpoint protocol (`checkpoint`) and the
held-out evaluation (`heldout`); and the single-device loop (`single`). The NeMo trainer is
`focus_nemo.nemo.trainer`; `focus_nemo.train.train` picks one."""
