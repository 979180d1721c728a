"""Short texts of two topics, and the tables users write them in: the text tests' data."""

from __future__ import annotations

import csv
from pathlib import Path

WEATHER = [
    "Heavy rain is expected across the north tonight",
    "Tomorrow will be sunny with a light breeze",
    "Snow is falling in the mountains this morning",
    "A thunderstorm warning was issued for the coast",
    "Temperatures will drop below freezing overnight",
    "Fog will clear by noon, then clouds build up",
    "Strong winds are forecast for the weekend",
    "It has not rained here for three weeks",
    "The heatwave continues with highs of 38 degrees",
    "Expect scattered showers in the afternoon",
    "Hail damaged cars during yesterday's storm",
    "A mild, dry autumn day with clear skies",
]
COOKING = [
    "Whisk the eggs with sugar until pale",
    "Simmer the tomato sauce for twenty minutes",
    "Knead the dough and let it rise for an hour",
    "Fry the onions in butter until golden",
    "Season the soup with salt and black pepper",
    "Bake the cake at 180 degrees for 40 minutes",
    "Chop the parsley finely and stir it into the rice",
    "Roast the chicken with garlic and lemon",
    "Melt the chocolate slowly over warm water",
    "Boil the pasta in plenty of salted water",
    "Marinate the beef overnight in soy sauce",
    "Grate the cheese over the warm gratin",
]


def write_table(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        columns = list(dict.fromkeys(name for row in rows for name in row))
        writer = csv.DictWriter(file, fieldnames=columns, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path
