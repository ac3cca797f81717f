"""Shared domain of the reviewing agents (doctor, pharmacist): claims, assessments, reviews."""
