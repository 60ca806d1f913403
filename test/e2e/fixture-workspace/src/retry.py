import time


def retry(action, attempts=3, delay=0.5):
    """Calls action until it succeeds, waiting longer after each failure."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(delay * 2 ** attempt)
