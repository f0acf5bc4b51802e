"""COVESA VSS paths the agent itself reads or writes (verbatim from the spec)."""

from __future__ import annotations

SPEED = "Vehicle.Speed"
ENGINE_SPEED = "Vehicle.Powertrain.CombustionEngine.Speed"
ENGINE_COOLANT = "Vehicle.Powertrain.CombustionEngine.ECT"
FUEL_LEVEL = "Vehicle.Powertrain.FuelSystem.RelativeLevel"
CURRENT_GEAR = "Vehicle.Powertrain.Transmission.CurrentGear"
PARKING_BRAKE = "Vehicle.Chassis.ParkingBrake.IsEngaged"
LOW_VOLTAGE_STATE = "Vehicle.LowVoltageSystemState"
DRIVER_DOOR_OPEN = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"

LATITUDE = "Vehicle.CurrentLocation.Latitude"
LONGITUDE = "Vehicle.CurrentLocation.Longitude"
ALTITUDE = "Vehicle.CurrentLocation.Altitude"
HEADING = "Vehicle.CurrentLocation.Heading"
HORIZONTAL_ACCURACY = "Vehicle.CurrentLocation.HorizontalAccuracy"
LOCATION_TIMESTAMP = "Vehicle.CurrentLocation.Timestamp"
GNSS_FIX_TYPE = "Vehicle.CurrentLocation.GNSSReceiver.FixType"

# Not VSS: the agent's own derived values live outside the Vehicle tree.
MODE = "Headunit.VehicleMode"
DRIVER_BUTTON = "Headunit.DriverButton.IsPressed"

# VSS Transmission.CurrentGear: 126 means Park.
GEAR_PARK = 126
# VSS LowVoltageSystemState values that mean the ignition is on.
IGNITION_ON_STATES = frozenset({"ACC", "ON", "START"})
