"""cl-adapters' ``hydra/launcher=joblib``: Hydra's joblib launcher (the same options), except that a job
whose worker process dies ends alone, recorded "interrupted", and the other jobs go on
(``cl_adapters.runs.sweep.launch``). Hydra instantiates launchers only from the ``hydra_plugins``
namespace; ``cl_adapters.runs.sweep.use_joblib_launcher`` puts its config (Hydra's joblib options, this
class as the target) under the name joblib."""

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher


class JoblibLauncher(HydraJoblibLauncher):
    def launch(self, job_overrides, initial_job_idx):
        from cl_adapters.runs.sweep import launch  # not at import: Hydra imports every plugin when it starts

        return launch(self, job_overrides, initial_job_idx)
