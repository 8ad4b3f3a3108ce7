"""Figures: :mod:`.save` is the one way a figure is written (atomic PNG); :mod:`.report`
draws the report's figures from aggregates and bounded samples.
"""
