"""Rollout evaluation of policy checkpoints: parallel envs, held-out seeds, Wilson intervals, videos.

    from s2policy.evaluate import EvalSettings, evaluate
    summary = evaluate("outputs/run/policy.safetensors", "outputs/run/eval", EvalSettings(episodes=50, workers=2))
    summary["success"]   # {"successes", "episodes", "rate", "ci_low", "ci_high", "confidence"}
"""

from .provenance import CheckpointInfo, read_checkpoint_info, resolve_policy_file
from .env_handles import EnvSpec, EnvWorkerError, LocalEnv, WorkerEnv
from .evaluator import EPISODES_FILE, SUMMARY_FILE, SUMMARY_FORMAT, EvalPlan, EvalSettings, evaluate, plan_evaluation
from .rollout import EpisodeJob, EpisodeResult, RolloutTiming, VideoPlan, run_episodes
from .seeds import EVAL_SEED_OFFSET, check_disjoint, demo_seeds, evaluation_seeds
from .stats import SuccessRate, difference_interval, wilson_interval
from .video import VideoWriter, read_video_info

__all__ = [
    "CheckpointInfo", "EPISODES_FILE", "EVAL_SEED_OFFSET", "EnvSpec", "EnvWorkerError", "EpisodeJob", "EpisodeResult",
    "EvalPlan", "EvalSettings", "LocalEnv", "RolloutTiming", "SUMMARY_FILE", "SUMMARY_FORMAT", "SuccessRate",
    "VideoPlan", "VideoWriter", "WorkerEnv", "check_disjoint", "demo_seeds", "difference_interval", "evaluate",
    "evaluation_seeds", "plan_evaluation", "read_checkpoint_info", "read_video_info", "resolve_policy_file",
    "run_episodes", "wilson_interval",
]
