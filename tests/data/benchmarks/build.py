"""Build the small benchmark fixtures in this folder (run once; the outputs are committed):

- `cv_bench/test_2d.parquet`, `cv_bench/test_3d.parquet`: CV-Bench's published fields (`idx`, `type`,
  `task`, `image` as a Hugging Face Image value, `question`, `choices`, `answer`, `prompt`, `source`),
  12 items: 2D from ADE20K and COCO (Count, Relation), 3D from Omni3D (Depth, Distance).
- `mme_realworld/MME_RealWorld.json` with its image folders: MME-RealWorld's published fields
  (`Question_id`, `Image`, `Text`, `Answer choices`, `Ground truth`, `Task`, `Subtask`, `Category`);
  the remote-sensing images are the largest (96 x 64 and 56 x 40 px), so a test that lowers
  `PIL.Image.MAX_IMAGE_PIXELS` to 2,000 puts one over twice the limit (PIL would refuse it) and one
  between once and twice (PIL would warn), while the others stay under it.

    .venv/bin/python tests/data/benchmarks/build.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

HERE = Path(__file__).parent


def picture(size: tuple[int, int], colour: tuple[int, int, int], mark: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", size, colour)
    d = ImageDraw.Draw(img)
    w, h = size
    d.rectangle([w // 4, h // 4, w // 2, h // 2], fill=mark)
    d.ellipse([w // 2, h // 2, w - 4, h - 4], fill=tuple(255 - c for c in mark))
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def cv_bench() -> None:
    out = HERE / "cv_bench"
    out.mkdir(exist_ok=True)
    opts = {"Count": (["0", "1", "2", "3", "4", "5"], "How many pictures are in the image?"),
            "Relation": (["left", "right"], "Considering the relative positions of the lamp and the bed in "
                                            "the image provided, where is the lamp located with respect to the bed?"),
            "Depth": (["chair", "table"], "Which object is closer to the camera taking this photo, the chair "
                                          "(highlighted by a red box) or the table (highlighted by a blue box)?"),
            "Distance": (["sofa", "door"], "Estimate the real-world distances between objects in this image. "
                                           "Which object is closer to the lamp (highlighted by a red box), the sofa "
                                           "(highlighted by a blue box) or the door (highlighted by a green box)?")}
    plan = {"2D": [("Count", "ADE20K", "(C)"), ("Count", "COCO", "(B)"), ("Relation", "ADE20K", "(A)"),
                   ("Relation", "COCO", "(B)"), ("Count", "ADE20K", "(A)"), ("Relation", "COCO", "(A)")],
            "3D": [("Depth", "Omni3D", "(A)"), ("Depth", "Omni3D", "(B)"), ("Distance", "Omni3D", "(B)"),
                   ("Distance", "Omni3D", "(A)"), ("Depth", "Omni3D", "(A)"), ("Distance", "Omni3D", "(B)")]}
    for kind, rows in plan.items():
        records = []
        for idx, (task, source, answer) in enumerate(rows):
            choices, question = opts[task]
            letters = "".join(f"({chr(65 + i)}) {c} " for i, c in enumerate(choices)).strip()
            img = picture((48, 36), (30 + 20 * idx, 90, 140), (200, 40 * idx % 255, 60))
            records.append({"idx": idx, "type": kind, "task": task,
                            "image": {"bytes": png_bytes(img), "path": f"img/{kind}/{task.lower()}/{source}_{idx}.png"},
                            "question": question, "choices": choices, "answer": answer,
                            "prompt": f"{question} Select from the following choices.\n{letters}",
                            "source": source})
        pd.DataFrame(records).to_parquet(out / f"test_{kind.lower()}.parquet", index=False)


def mme_realworld() -> None:
    out = HERE / "mme_realworld"
    five = ["(A) {}", "(B) {}", "(C) {}", "(D) {}", "(E) The image does not feature the object."]

    def choices(*texts: str) -> list[str]:
        return [f.format(t) for f, t in zip(five, texts)] + [five[4]]

    images = {"remote_sensing/03553.jpg": (96, 64), "remote_sensing/03554.jpg": (56, 40),
              "AutonomousDriving/nuscenes_0001.jpg": (48, 32), "monitoring_images/traffic_0001.jpg": (40, 30),
              "diagram_and_table/chart_0001.jpg": (40, 30)}
    for k, (rel, size) in enumerate(images.items()):
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        picture(size, (60, 110 + 20 * k, 70), (220, 200, 40)).save(p, format="JPEG", quality=90)
    recs = [
        {"Question_id": "perception/remote_sensing/color/0001", "Image": "remote_sensing/03553.jpg",
         "Text": "What is the colour of the roof of the building at the top left of the image?",
         "Answer choices": choices("Yellow", "Red", "Blue", "White"), "Ground truth": "A",
         "Task": "Perception", "Subtask": "Remote Sensing", "Category": "color"},
        {"Question_id": "perception/remote_sensing/count/0002", "Image": "remote_sensing/03554.jpg",
         "Text": "How many round structures are in the image?",
         "Answer choices": choices("0", "1", "2", "3"), "Ground truth": "B",
         "Task": "Perception", "Subtask": "Remote Sensing", "Category": "count"},
        {"Question_id": "perception/autonomous_driving/objects/0003", "Image": "AutonomousDriving/nuscenes_0001.jpg",
         "Text": "What is the colour of the traffic light ahead?",
         "Answer choices": choices("Red", "Green", "Yellow", "Off"), "Ground truth": "C",
         "Task": "Perception", "Subtask": "Autonomous_Driving", "Category": "traffic_signal"},
        {"Question_id": "reasoning/monitoring/intention/0004", "Image": "monitoring_images/traffic_0001.jpg",
         "Text": "Which way is the yellow vehicle about to turn?",
         "Answer choices": choices("Left", "Right", "Straight", "U-turn"), "Ground truth": "A",
         "Task": "Reasoning", "Subtask": "Monitoring", "Category": "intention"},
        {"Question_id": "perception/diagram_and_table/0005", "Image": "diagram_and_table/chart_0001.jpg",
         "Text": "What is the highest value in the chart?",
         "Answer choices": choices("10", "20", "30", "40"), "Ground truth": "D",
         "Task": "Perception", "Subtask": "Diagram and Table", "Category": "diagram"},
    ]
    (out / "MME_RealWorld.json").write_text(json.dumps(recs, indent=1) + "\n")


if __name__ == "__main__":
    cv_bench()
    mme_realworld()
