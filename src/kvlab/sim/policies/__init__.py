"""kvlab.sim.policies"""
