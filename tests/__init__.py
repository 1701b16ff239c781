"""The test suite. A regular package so that ``tests.support`` resolves to this tree even where
an installed distribution ships a top-level ``tests`` package (a namespace package would lose).
"""
