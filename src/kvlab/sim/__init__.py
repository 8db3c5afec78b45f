"""kvlab.sim"""
