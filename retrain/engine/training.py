"""compile / fit / evaluate / predict (filled in by the training work)."""


class Trainer:
    """Training loop methods mixed into Model."""

    def _init_training(self):
        self.optimizer = None
        self.loss = None
