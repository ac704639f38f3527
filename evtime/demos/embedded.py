"""Running a demo's app on the embedded engine to the end of its input, with progress."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evtime.app import App


def run_to_end(app: App, *, show_watermark: bool = False) -> float:
    """Run ``app`` on the embedded engine until its bounded input ends, printing the records
    read and the rate once a second; the seconds it took."""
    runner = app.runner()
    started = time.perf_counter()

    async def drive() -> None:
        last = started
        runner.open()
        while not runner.finished:
            await runner.step()
            now = time.perf_counter()
            if now - last >= 1.0:
                last = now
                done = sum(t.records_in for t in runner.tasks)
                line = f"  {done:>9,} records  {done / (now - started):>9,.0f} records/s"
                if show_watermark:
                    line += f"  watermark {min(t.watermark for t in runner.tasks)}"
                print(line, flush=True)
        await runner.close()

    asyncio.run(drive())
    return time.perf_counter() - started
