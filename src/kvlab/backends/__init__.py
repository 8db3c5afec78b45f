"""kvlab.backends"""
