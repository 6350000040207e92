"""The keys a task's parts (adapter, head, fusion) are stored under in the model's module dicts."""

SHARED = "shared"  # the adapter (head) key when one adapter (head) serves every task


def task_key(task: int) -> str:
    return str(int(task))
