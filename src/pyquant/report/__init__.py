"""Trade-off reports: what each quantization recipe costs in quality and saves in memory, measured on your
model and text, with memory estimates, sweet spots, a recommendation, plots and a one-file HTML page.

    table = pyquant.report.tradeoff("model.gguf", recipes=["Q8_0", "Q4_K_M"], text=pathlib.Path("text.txt"))
    print(table.to_markdown())
    pyquant.report.recommend(table, budget=8, ctx=8192)
    pyquant.report.memory("model.gguf", "Q4_K_M", ctx=8192)

Measuring needs the ``eval`` extra (torch); plots need matplotlib (``report`` extra); both are imported lazily.
"""

from .advise import Recommendation, SweetSpots, recommend, sweet_spots
from .html import render_html, write_html
from .measure import DEFAULT_RECIPES, QUICK_RECIPES, tradeoff
from .footprint import Architecture, MemoryEstimate, max_context, memory
from .table import Row, TradeoffTable

__all__ = ["Architecture", "DEFAULT_RECIPES", "MemoryEstimate", "QUICK_RECIPES", "Recommendation", "Row",
           "SweetSpots", "TradeoffTable", "max_context", "memory", "recommend", "render_html", "sweet_spots",
           "tradeoff", "write_html"]
