"""lorakit.train: the training loop (``loop.Run`` + ``loop.fit``), one run's setup (``runner.setup_run``),
train-many (``many/``), and their configuration (``config.TrainConfig``). Import the submodules directly."""
