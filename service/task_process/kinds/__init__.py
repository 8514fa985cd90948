"""Built-in task kinds: ``sleep`` (the headline simulation), ``gen_task`` (the exercise's fakes), ``echo``."""

from service.task_process.kinds import echo, fake, sleep  # noqa: F401  (importing registers them)
