// The Drive screen: speed, gear and mode large; engine, fuel, coolant, doors, GNSS and
// the fleet link as tiles. Values the agent marks stale are shown dimmed.

import { byId, num, setText, show } from "./dom.js";

export const PATHS = {
  speed: "Vehicle.Speed",
  rpm: "Vehicle.Powertrain.CombustionEngine.Speed",
  gear: "Vehicle.Powertrain.Transmission.CurrentGear",
  fuel: "Vehicle.Powertrain.FuelSystem.RelativeLevel",
  coolant: "Vehicle.Powertrain.CombustionEngine.ECT",
  brake: "Vehicle.Chassis.ParkingBrake.IsEngaged",
  latitude: "Vehicle.CurrentLocation.Latitude",
  longitude: "Vehicle.CurrentLocation.Longitude",
  fix: "Vehicle.CurrentLocation.GNSSReceiver.FixType",
  ignition: "Vehicle.LowVoltageSystemState",
  mode: "Headunit.VehicleMode",
};

const MODES = { off: "Switched off", parked: "Parked", idling: "Engine running", driving: "Driving" };
const FIXES = { NONE: "No fix", TWO_D: "2D fix", THREE_D: "3D fix" };
const LINKS = { online: "Online", resuming: "Resuming", connecting: "Connecting", offline: "Offline" };
const RPM_FULL = 7000; // where the engine meter is full
const LOW_FUEL = 12; // % at and under which the fuel tile warns
const HOT = 110; // °C at and over which the coolant tile warns
const COLD = 60; // °C under which the engine is still warming up
const DOOR = /^Vehicle\.Cabin\.Door\.Row(\d)\.(DriverSide|PassengerSide)\.IsOpen$/;
const TRUNK = /^Vehicle\.Body\.Trunk\.(Front|Rear)\.IsOpen$/;

/** The reading at `path`, or undefined; `fresh` false when the agent marked it stale. */
export function reading(values, path) {
  const entry = values[path];
  if (!entry || typeof entry !== "object") return undefined;
  return { value: entry.value, fresh: !entry.stale };
}

/** The mode's label ("Driving"), or "" before the agent knows it. */
export function modeLabel(values) {
  const mode = reading(values, PATHS.mode);
  return mode ? MODES[mode.value] ?? String(mode.value) : "";
}

/** "P", "R", "N", "D3"… from VSS CurrentGear (126 park, 0 neutral, negative reverse). */
export function gearLabel(value) {
  if (typeof value !== "number") return "";
  if (value === 126) return "P";
  if (value === 0) return "N";
  if (value < 0) return "R";
  return `D${value}`;
}

export function render(store) {
  const values = store.values;
  renderSpeed(values);
  renderGear(values);
  renderMode(values);
  renderEngine(values);
  renderDoors(values);
  renderGnss(values);
  renderLink(store.connection);
}

function fill(id, entry, digits = 0) {
  const el = setText(id, entry ? num(entry.value, digits) : "--");
  el.classList.toggle("stale", !!entry && !entry.fresh);
  return el;
}

function renderSpeed(values) {
  fill("drive-speed", reading(values, PATHS.speed));
}

function renderGear(values) {
  const gear = reading(values, PATHS.gear);
  const label = gear ? gearLabel(gear.value) : "";
  const strip = byId("drive-gear");
  strip.classList.toggle("stale", !!gear && !gear.fresh);
  for (const el of strip.querySelectorAll(".gear")) {
    const letter = el.dataset.gear;
    const active = letter === label.charAt(0) && label !== "";
    el.classList.toggle("active", active);
    setText(el, letter === "D" && active ? label : letter);
  }
}

function renderMode(values) {
  const label = modeLabel(values);
  setText("drive-mode", label || "Waiting for the car");
  const mode = reading(values, PATHS.mode);
  document.body.dataset.mode = mode ? String(mode.value) : "";
}

function renderEngine(values) {
  const rpm = reading(values, PATHS.rpm);
  fill("drive-rpm", rpm);
  meter("rpm-meter", rpm && rpm.fresh ? rpm.value / RPM_FULL : 0);

  const fuel = reading(values, PATHS.fuel);
  fill("drive-fuel", fuel);
  meter("fuel-meter", fuel ? fuel.value / 100 : 0);
  const lowFuel = !!fuel && typeof fuel.value === "number" && fuel.value <= LOW_FUEL;
  byId("tile-fuel").classList.toggle("warn", lowFuel);

  const coolant = reading(values, PATHS.coolant);
  fill("drive-coolant", coolant);
  const temp = coolant && typeof coolant.value === "number" ? coolant.value : null;
  const hot = temp !== null && temp >= HOT;
  byId("tile-coolant").classList.toggle("alarm", hot);
  setText("drive-coolant-note", temp === null ? "\u00a0" : hot ? "Too hot" : temp < COLD ? "Warming up" : "Normal");
}

function meter(id, fraction) {
  const value = typeof fraction === "number" && Number.isFinite(fraction) ? fraction : 0;
  byId(id).style.width = `${Math.round(Math.max(0, Math.min(1, value)) * 100)}%`;
}

/** Every open door or boot the agent reports, by name ("Driver door"). */
export function openDoors(values) {
  const open = [];
  for (const [path, entry] of Object.entries(values)) {
    if (!entry || entry.value !== true) continue;
    const door = DOOR.exec(path);
    if (door) open.push(doorName(Number(door[1]), door[2]));
    const trunk = TRUNK.exec(path);
    if (trunk) open.push(trunk[1] === "Rear" ? "Boot" : "Bonnet");
  }
  return open;
}

function doorName(row, side) {
  if (row === 1) return side === "DriverSide" ? "Driver door" : "Passenger door";
  return side === "DriverSide" ? "Rear door, driver side" : "Rear door, passenger side";
}

function renderDoors(values) {
  const open = openDoors(values);
  const known = Object.keys(values).some((path) => DOOR.test(path) || TRUNK.test(path));
  setText("drive-doors", !known ? "--" : open.length ? `${open.length} open` : "Closed");
  byId("tile-doors").classList.toggle("alarm", open.length > 0);
  const alert = show("door-alert", open.length > 0);
  setText(alert, open.length === 1 ? `${open[0]} open` : `${open.join(", ")} open`);
  const brake = reading(values, PATHS.brake);
  setText("drive-brake", !brake ? "\u00a0" : brake.value ? "Parking brake on" : "Parking brake off");
}

function renderGnss(values) {
  const fix = reading(values, PATHS.fix);
  const lat = reading(values, PATHS.latitude);
  const lon = reading(values, PATHS.longitude);
  const has = fix && fix.fresh && fix.value !== "NONE";
  setText("drive-gnss", !fix ? "--" : fix.fresh ? FIXES[fix.value] ?? String(fix.value) : "Fix lost");
  byId("tile-gnss").classList.toggle("warn", !!fix && !has);
  const position = lat && lon ? `${coordinate(lat.value, "N", "S")}\n${coordinate(lon.value, "E", "W")}` : "\u00a0";
  setText("drive-position", position).classList.toggle("stale", !has);
}

function coordinate(value, plus, minus) {
  if (typeof value !== "number") return "--";
  return `${Math.abs(value).toFixed(4)}° ${value >= 0 ? plus : minus}`;
}

function renderLink(connection) {
  const state = connection ? connection.state : "";
  setText("connection-state", LINKS[state] ?? "--");
  byId("tile-link").dataset.state = state;
  setText("connection-queued-text", plural(connection?.queued, "sample", "samples", "queued"));
  setText("connection-outbox-text", plural(connection?.outbox, "message", "messages", "to send"));
}

/** "1 sample queued", "12 samples queued". */
function plural(value, one, many, what) {
  const n = typeof value === "number" && Number.isFinite(value) ? value : 0;
  return `${n} ${n === 1 ? one : many} ${what}`;
}

export { LINKS };
