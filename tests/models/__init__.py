"""Tests of the synthetic generator and the shipped plate model."""
