import pytest
import ray


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for the module's studies: 2 CPUs, the trial drivers' resource, the state API
    (Ray Train frees a stopped trial's placement group through it). A module may define its own."""
    from sslab.engine.placement import TRIAL_RESOURCE

    if not ray.is_initialized():
        ray.init(num_cpus=2, resources={TRIAL_RESOURCE: 10}, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()
