// Streams seeded facesjs cartoon faces to toon3d, one long-running process for a whole dataset.
//
// Protocol (line-based, UTF-8):
//   stdin:  one request per line: "<seed> <index>" (non-negative integers), optionally followed
//           by a facesjs feature name ("eye", "mouth", "head", ...) to draw that feature alone,
//           which is how toon3d measures where a face's parts land.
//   stdout: one JSON object per request, in order:
//           {"index": i, "seed": s, "gender": "male"|"female", "background": "#rrggbb",
//            "face": {...facesjs parameters...}, "svg": "<svg ...>"}
//           or {"error": "..."} for a malformed request.
//   A first line {"ready": true, "facesjs": "<version>"} is written at start-up.
//
// facesjs draws every random choice from Math.random. For face `index` of `seed` we swap in a
// small seeded generator whose state depends only on (seed, index), so a face is reproducible
// and does not depend on how many faces were asked for, or in which batch.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { generate, faceToSvgString, svgsIndex } from "facesjs";

const features = Object.keys(svgsIndex);

const GENDERS = ["male", "female"];

// 32-bit mix of (seed, index) into one state word (murmur3 finaliser applied twice).
function mixSeed(seed, index) {
  let h = (seed >>> 0) ^ 0x9e3779b9;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h = (h ^ (h >>> 16)) >>> 0;
  h = (h ^ Math.imul(index >>> 0, 0x27d4eb2d) ^ Math.floor(index / 4294967296)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

// mulberry32: a tiny, well-mixed 32-bit generator returning floats in [0, 1).
function mulberry32(state) {
  let a = state >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hexColour(rand) {
  const channel = () => Math.floor(rand() * 256).toString(16).padStart(2, "0");
  return `#${channel()}${channel()}${channel()}`;
}

// Overrides that hide every feature but `keep`: an id with no drawing is skipped by facesjs.
function onlyFeature(keep) {
  const overrides = {};
  for (const name of features) {
    if (name !== keep) overrides[name] = { id: "none" };
  }
  return overrides;
}

function makeFace(seed, index, feature) {
  const rand = mulberry32(mixSeed(seed, index));
  const savedRandom = Math.random;
  Math.random = rand;
  try {
    const gender = GENDERS[Math.floor(rand() * GENDERS.length)];
    // Jersey colours vary per face so the shirts are not all one team.
    const teamColors = [hexColour(rand), hexColour(rand), hexColour(rand)];
    const background = hexColour(rand);
    const face = generate({ teamColors }, { gender });
    // faceToSvgString applies overrides to the face in place, so draw a copy.
    const drawn = feature ? JSON.parse(JSON.stringify(face)) : face;
    const svg = faceToSvgString(drawn, feature ? onlyFeature(feature) : undefined);
    return { index, seed, gender, background, face, svg };
  } finally {
    Math.random = savedRandom;
  }
}

function facesjsVersion() {
  const url = new URL("./node_modules/facesjs/package.json", import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

process.stdout.write(JSON.stringify({ ready: true, facesjs: facesjsVersion() }) + "\n");

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  const text = line.trim();
  if (!text) continue;
  const words = text.split(/\s+/);
  const numbers = words.slice(0, 2).map(Number);
  const feature = words[2];
  const valid = (words.length === 2 || words.length === 3)
    && numbers.every((x) => Number.isInteger(x) && x >= 0)
    && (feature === undefined || features.includes(feature));
  if (!valid) {
    process.stdout.write(JSON.stringify({ error: `bad request line: ${text}` }) + "\n");
    continue;
  }
  process.stdout.write(JSON.stringify(makeFace(numbers[0], numbers[1], feature)) + "\n");
}
