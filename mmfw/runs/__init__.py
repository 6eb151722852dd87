"""Run management: what happens around a training run, not inside it.

``run_folder``  what a run folder records about itself (run.json, checkpoints, the claim on the folder)
``config``      checks of the composed config and its command-line overrides, before anything is built
``job``         one training run: fit, test, record how it ended
``resume``      ``resume=<run folder>``: reload a run's config, check the checkpoint fits, the callbacks it needs
``sweep``       multiruns that survive failed jobs, their summary, continuing an Optuna study
``compare``     ``mmfw-compare``: rank run folders offline
``load``        ``mmfw.load_run`` / ``mmfw-predict``: a finished run's model and preprocessing on new rows
``export``      ``mmfw-export``: a finished run's fused model as ONNX or TorchScript, checked against PyTorch
``loggers``     W&B that never prompts, and closing it between jobs
``resolvers``   the ``${mmfw.*}`` resolvers the configs use

Nothing here is imported by ``mmfw.data``, ``mmfw.encoders`` or ``mmfw.fusion``. Modules that light commands use
(``run_folder``, ``compare``, ``resolvers``, ``config``) import neither torch nor Lightning at the top.
"""
