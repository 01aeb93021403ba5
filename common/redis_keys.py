"""Every Redis key the service reads or writes, named in one place (arq's own come from arq).

key                          type        value                                expiry
`job:{job_id}`               string      job record, JSON (gateway.jobs)      RESULT_TTL_S once ended
`limit:rate:{owner}:{min}`   string      requests in that minute (integer)    120 s
`limit:slots:{owner}`        sorted set  job id -> epoch s the slot lapses    the latest lapse
`limit:admission`            sorted set  job id -> epoch s the ticket lapses  the latest lapse
`arq:queue`                  sorted set  arq's queue (job id -> run-at ms)    none
`arq:job:{job_id}`           string      arq's pickled job (function, args)   arq's
`arq:in-progress:{job_id}`   string      arq's lease on a running job         JOB_LEASE_S, renewed
`arq:queue:health-check`     string      a worker's last health line          arq's

`owner` is the SHA-256 hex of an api_token, `min` is epoch seconds // 60, `job_id` a UUID4.
"""

from __future__ import annotations

from arq.constants import default_queue_name, health_check_key_suffix, in_progress_key_prefix, job_key_prefix

JOB_RECORD_PREFIX = "job:"
QUEUE_ADMISSION = "limit:admission"
ARQ_QUEUE = default_queue_name
ARQ_WORKER_HEALTH_CHECK = default_queue_name + health_check_key_suffix


def job_record(job_id: str) -> str:
    return JOB_RECORD_PREFIX + job_id


def rate_window(owner: str, minute: int) -> str:
    """`minute`: epoch seconds // 60."""
    return f"limit:rate:{owner}:{minute}"


WEBHOOK_QUEUE = "arq:webhooks"  # the webhook sender's own arq queue (python -m gateway.webhooks)
WEBHOOK_FUNCTION = "deliver_webhook"  # its one function; the job worker enqueues it by this name
WEBHOOK_HEALTH_CHECK = WEBHOOK_QUEUE + health_check_key_suffix


def webhook_state(job_id: str) -> str:
    """A job's webhook delivery state (JSON), beside its record: it changes after the job ended."""
    return f"webhook:{job_id}"


def poll_window(owner: str, minute: int) -> str:
    """The polling endpoints' own window (status and result reads), apart from submits."""
    return f"limit:poll:{owner}:{minute}"


def job_slots(owner: str) -> str:
    return f"limit:slots:{owner}"


def arq_job(job_id: str) -> str:
    return job_key_prefix + job_id


def arq_in_progress(job_id: str) -> str:
    return in_progress_key_prefix + job_id
