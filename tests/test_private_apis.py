"""The two private library calls mmfw makes, where no public one exists; these tests fail when the library changes them.

* ``mmfw.runs.callbacks.checkpoint_state``: Lightning's checkpoint without ``Trainer.save_checkpoint``'s barrier.
* ``mmfw.runs.study.mark_trial_interrupted``: a user attribute on an Optuna trial this process did not ``ask()`` for.
"""

from __future__ import annotations

import optuna
import pytorch_lightning as pl
import torch
from optuna.trial import TrialState

from mmfw.runs.callbacks import checkpoint_state
from mmfw.runs.run_folder import load_checkpoint
from mmfw.runs.study import mark_trial_interrupted


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_checkpoint_state_is_what_save_checkpoint_writes(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    trainer.fit(Tiny(), data)
    trainer.save_checkpoint(tmp_path / "public.ckpt")
    public, private = load_checkpoint(tmp_path / "public.ckpt"), checkpoint_state(trainer)
    assert private.keys() == public.keys()
    assert {"state_dict", "optimizer_states", "loops", "epoch", "global_step"} <= private.keys()
    assert private["global_step"] == public["global_step"] == 2
    for key, value in public["state_dict"].items():
        assert torch.equal(private["state_dict"][key], value)


def test_mark_trial_interrupted_on_running_and_waiting_trials(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s")
    study.enqueue_trial({"x": 0.5})  # WAITING
    running = study.ask({"x": optuna.distributions.UniformDistribution(0, 1)})  # takes the queued one
    study.enqueue_trial({"x": 0.25})
    for frozen in study.get_trials(deepcopy=False):
        mark_trial_interrupted(study, frozen)
        study.tell(frozen.number, state=TrialState.FAIL)
    trials = optuna.load_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s").trials
    assert [t.number for t in trials] == [running.number, running.number + 1]
    assert all(t.state == TrialState.FAIL and t.user_attrs == {"interrupted": True} for t in trials)
