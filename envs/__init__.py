"""MuJoCo manipulation tasks (robosuite and Meta-World) behind one gymnasium contract, scripted experts,
demonstration collection into robomimic-format HDF5, and re-rendering stored demos at any camera size.

    env = envs.make_env("lift", camera_size=224, placement_range=0.1)
    obs, info = env.reset(seed=0)   # obs["agentview"] uint8 (224, 224, 3), obs["proprio"], obs["object"]
"""

from .rendering import select_gl_backend

select_gl_backend()  # before anything imports mujoco

from .tasks import TASKS, TaskSpec, get_task  # noqa: E402
from .make import make_env, register_gym_envs, task_variation  # noqa: E402
from .experts import make_expert  # noqa: E402
from .collect import collect_demos  # noqa: E402
from .rerender import rerender  # noqa: E402

register_gym_envs()

__all__ = ["TASKS", "TaskSpec", "collect_demos", "get_task", "make_env", "make_expert", "rerender",
           "task_variation"]
