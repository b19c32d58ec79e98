"""How long opening a long conversation keeps the chat window busy, offscreen.

    QT_QPA_PLATFORM=offscreen python bench/chat_open.py [--messages 200] [--repeat 3]

A chat view the size of a 1280×860 window switches from a one-message conversation to one of
``--messages`` messages (every answer a list, a code block and a paragraph; every tenth question
with a picture) and back. Four figures per switch: until the window answers again (the newest
cards are on screen and the first paint is done), the longest turn of the event loop meanwhile
(how long the window stops answering at worst), until every older card is built, and, with
every card built, how long switching away takes. The same switch with every card built at once
is measured for comparison.
Prints a table; writes JSON to ``bench/results/chat_open.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtGui import QColor, QImage

from desktop.app import create_application
from desktop.storage import Attachment, Message
from desktop.views import message_list
from desktop.views.chat import ChatView

ANSWER = (
    "Here is an answer with **bold** and a list:\n\n- one\n- two\n- three\n\n"
    "```python\nprint('hi')\n```\n\n" + "Some longer prose sentence that wraps. " * 12
)


def conversation(count: int, picture: Path) -> list[Message]:
    attachment = Attachment("0" * 64, picture, picture.name)
    messages = []
    for index in range(count):
        if index % 2 == 0:
            pictures = [attachment] if index % 20 == 0 else []
            text = f"Question {index // 2}: what is in this picture?"
            messages.append(Message(f"m{index}", "c", "user", text, attachments=pictures))
        else:
            messages.append(
                Message(f"m{index}", "c", "assistant", f"Answer {index // 2}. {ANSWER}")
            )
    return messages


def until(done: Callable[[], bool]) -> float:
    """Turn the event loop until ``done``; the longest turn, in seconds (the window's longest
    pause while it worked)."""
    longest = 0.0
    while not done():
        began = time.perf_counter()
        QCoreApplication.processEvents()
        longest = max(longest, time.perf_counter() - began)
    return longest


def settle() -> None:
    """Paint, and delete what was deleted later, as the running event loop would."""
    QCoreApplication.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def switch(view: ChatView, long: list[Message], short: list[Message]) -> dict[str, float]:
    view.show_conversation(short)
    settle()
    began = time.perf_counter()
    view.show_conversation(long)
    QCoreApplication.processEvents()  # the first paint
    answering = time.perf_counter() - began
    longest_pause = until(lambda: not view.messages.is_loading())
    built = time.perf_counter() - began
    assert len(view.messages.cards()) == len(long)
    settle()
    began = time.perf_counter()
    view.show_conversation(short)
    settle()
    away = time.perf_counter() - began
    return {
        "until_answering_s": answering,
        "longest_pause_s": max(answering, longest_pause),
        "all_cards_s": built,
        "switch_away_s": away,
    }


def measure(view: ChatView, long: list[Message], short: list[Message], repeat: int) -> dict:
    runs = [switch(view, long, short) for _ in range(repeat)]
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    app = create_application(["bench"])
    with tempfile.TemporaryDirectory() as folder:
        picture = Path(folder) / "red.png"
        image = QImage(640, 480, QImage.Format.Format_RGB32)
        image.fill(QColor(200, 50, 50))
        image.save(str(picture))
        view = ChatView()
        view.resize(1060, 860)  # the chat page of a 1280×860 window
        view.show()
        QCoreApplication.processEvents()
        long, short = conversation(args.messages, picture), conversation(1, picture)
        rows = {"on idle": measure(view, long, short, args.repeat)}
        first = message_list.FIRST_CARDS
        message_list.FIRST_CARDS = args.messages  # every card at once
        rows["all at once"] = measure(view, long, short, args.repeat)
        message_list.FIRST_CARDS = first
        view.close()
    app.processEvents()
    print(f"{args.messages} messages, median of {args.repeat}")
    print(
        f"{'older cards built':<18} {'answering':>10} {'longest pause':>14} {'all cards':>10} "
        f"{'switch away':>12}"
    )
    for name, row in rows.items():
        print(
            f"{name:<18} {row['until_answering_s']:>9.3f}s {row['longest_pause_s']:>13.3f}s "
            f"{row['all_cards_s']:>9.3f}s {row['switch_away_s']:>11.3f}s"
        )
    result = {
        "messages": args.messages,
        "repeat": args.repeat,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "first_cards": message_list.FIRST_CARDS,
        "batch_cards": message_list.BATCH_CARDS,
        "rows": rows,
    }
    out = Path(__file__).resolve().parent / "results" / "chat_open.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
