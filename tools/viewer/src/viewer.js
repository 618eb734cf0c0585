// toon3d avatar viewer: the page script of viewer.html (bundled with three.js by esbuild, see package.json).
//
// viewer.html carries the avatar GLB as base64 in <script id="toon3d-glb"> and settings as JSON in
// <script id="toon3d-meta">; nothing is fetched. The UI: orbit controls on the canvas, one slider per
// morph target (named from mesh.extras.targetNames), a light direction (azimuth/elevation) and
// ambient control, and play/pause when the GLB has an animation. `window.toon3dViewer` exposes the
// state (status "loading" | "ready" | "error", morph names, frame counter) for tests and scripting.
import * as THREE from 'three';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';

const STYLE = `
html, body { margin: 0; height: 100%; overflow: hidden; background: #2b2f36; color: #e8e8e8;
  font: 13px/1.4 system-ui, sans-serif; }
#toon3d-app { display: flex; height: 100%; }
#toon3d-view { position: relative; flex: 1 1 auto; min-width: 0; }
#toon3d-canvas { position: absolute; inset: 0; width: 100%; height: 100%; display: block; }
#toon3d-panel { flex: 0 0 250px; overflow-y: auto; background: #1d2025; padding: 10px 12px;
  box-sizing: border-box; }
#toon3d-panel h1 { font-size: 15px; margin: 0 0 6px; }
#toon3d-panel h2 { font-size: 12px; margin: 12px 0 4px; text-transform: uppercase; letter-spacing: .06em;
  color: #9aa3ad; }
.toon3d-row { display: grid; grid-template-columns: 1fr 38px; align-items: center; column-gap: 6px; }
.toon3d-row label { grid-column: 1 / 3; margin-top: 4px; overflow-wrap: anywhere; }
.toon3d-row input[type=range] { width: 100%; margin: 0; }
.toon3d-row output { text-align: right; font-variant-numeric: tabular-nums; color: #c7cdd4; }
#toon3d-panel button { margin: 4px 6px 0 0; padding: 3px 10px; }
#toon3d-status { color: #9aa3ad; }
#toon3d-status.error { color: #ff8080; }
`;

// `frame` counts rendered frames: the page draws only when something changed (no idle GPU load).
const state = {
  status: 'loading', error: null, morphNames: [], frame: 0, hasAnimation: false, playing: false, animationTime: 0,
};
window.toon3dViewer = state;
let requestRedraw = () => {};

function el(tag, attrs = {}, parent = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  if (parent) parent.appendChild(node);
  return node;
}

function setStatus(text, isError = false) {
  const status = document.getElementById('toon3d-status');
  status.textContent = text;
  status.className = isError ? 'error' : '';
}

function fail(message) {
  state.status = 'error';
  state.error = message;
  document.body.dataset.status = 'error';
  setStatus(message, true);
  console.error(`toon3d viewer: ${message}`);
}

function decodeBase64(text) {
  const binary = atob(text.replace(/\s+/g, ''));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// One labelled range slider; `onInput(value)` runs on every move.
function slider(parent, id, label, min, max, step, value, onInput, format = (v) => v.toFixed(2)) {
  const row = el('div', { class: 'toon3d-row' }, parent);
  el('label', { for: id, text: label }, row);
  const input = el('input', { type: 'range', id, min, max, step, value, 'aria-label': label }, row);
  const out = el('output', { for: id, text: format(Number(value)) }, row);
  const update = () => {
    out.textContent = format(Number(input.value));
    onInput(Number(input.value));
    requestRedraw();
  };
  input.addEventListener('input', update);
  input.addEventListener('change', update);
  return { input, show: (v) => { input.value = v; out.textContent = format(Number(v)); } };
}

function main() {
  el('style', { text: STYLE }, document.head);
  const app = document.getElementById('toon3d-app') || el('div', { id: 'toon3d-app' }, document.body);
  const view = el('div', { id: 'toon3d-view' }, app);
  const canvas = el('canvas', { id: 'toon3d-canvas' }, view);
  const panel = el('div', { id: 'toon3d-panel' }, app);
  const meta = JSON.parse(document.getElementById('toon3d-meta')?.textContent || '{}');
  el('h1', { text: meta.title || 'toon3d avatar' }, panel);
  el('div', { id: 'toon3d-status', text: 'loading…' }, panel);
  el('div', { text: 'drag: orbit · right-drag: pan · wheel: zoom' }, panel);

  let renderer;
  try {
    // preserveDrawingBuffer keeps the last frame readable (screenshots, toDataURL).
    renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  } catch (err) {
    fail(`WebGL is not available in this browser (${err.message})`);
    return;
  }
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x2b2f36);
  const camera = new THREE.PerspectiveCamera(30, 1, 0.001, 100);
  const controls = new OrbitControls(camera, canvas);
  controls.enableDamping = true;
  controls.dampingFactor = 0.12;  // three's 0.05 glides on for seconds
  // three.js lights are physical (Lambert = albedo/π): these give about the albedo on a face lit head-on.
  const ambient = new THREE.AmbientLight(0xffffff, 1.0);
  const sun = new THREE.DirectionalLight(0xffffff, 2.2);
  let dirty = true;
  requestRedraw = () => { dirty = true; };
  controls.addEventListener('change', requestRedraw);
  scene.add(ambient, sun, sun.target);

  const resize = () => {
    const w = canvas.clientWidth || window.innerWidth;
    const h = canvas.clientHeight || window.innerHeight;
    renderer.setSize(w, h, false);
    camera.aspect = w / Math.max(h, 1);
    camera.updateProjectionMatrix();
    requestRedraw();
  };
  window.addEventListener('resize', resize);
  resize();

  const centre = new THREE.Vector3();
  let radius = 1;
  const light = { azimuth: Number(meta.light_azimuth ?? -30), elevation: Number(meta.light_elevation ?? 25) };
  // The light is fixed to the face (not the camera), so orbiting shows the relief under one light.
  const placeLight = () => {
    const az = THREE.MathUtils.degToRad(light.azimuth);
    const el_ = THREE.MathUtils.degToRad(light.elevation);
    const dir = new THREE.Vector3(Math.sin(az) * Math.cos(el_), Math.sin(el_), Math.cos(az) * Math.cos(el_));
    sun.position.copy(centre).addScaledVector(dir, 4 * radius);
    sun.target.position.copy(centre);
    requestRedraw();
  };
  let resetView = () => {};

  const morphMeshes = [];
  let mixer = null;
  let action = null;
  const timer = new THREE.Timer();
  const sliders = {};

  const setMorph = (name, value) => {
    for (const mesh of morphMeshes) {
      const index = mesh.morphTargetDictionary[name];
      if (index !== undefined) mesh.morphTargetInfluences[index] = value;
    }
    requestRedraw();
  };
  state.setMorph = (name, value) => { if (action) pause(); setMorph(name, value); sliders[name]?.show(value); };

  let playButton = null;
  const pause = () => {
    if (!action) return;
    action.paused = true;
    action.enabled = false;  // a disabled action no longer overwrites the sliders' weights
    state.playing = false;
    playButton.textContent = 'Play';
  };
  const play = () => {
    if (!action) return;
    action.enabled = true;
    action.paused = false;
    action.play();
    state.playing = true;
    playButton.textContent = 'Pause';
  };

  const onLoad = (gltf) => {
    scene.add(gltf.scene);
    gltf.scene.updateMatrixWorld(true);
    gltf.scene.traverse((obj) => {
      if (obj.isMesh && obj.morphTargetDictionary) morphMeshes.push(obj);
    });
    const box = new THREE.Box3().setFromObject(gltf.scene);
    const size = box.getSize(new THREE.Vector3());
    box.getCenter(centre);
    radius = size.length() / 2 || 1;
    camera.near = radius / 100;
    camera.far = radius * 100;
    resetView = () => {
      // Fit the front of the box (the face looks down +z) to the view, with a small margin.
      const halfHeight = Math.max(size.y / 2, size.x / 2 / camera.aspect) * 1.08;
      const distance = halfHeight / Math.tan(THREE.MathUtils.degToRad(camera.fov / 2)) + size.z / 2;
      camera.position.copy(centre).add(new THREE.Vector3(0, 0, distance));
      controls.target.copy(centre);
      camera.updateProjectionMatrix();
      controls.update();
      requestRedraw();
    };
    resetView();
    placeLight();

    const names = [];
    for (const mesh of morphMeshes) {
      for (const [name, index] of Object.entries(mesh.morphTargetDictionary)) names[index] = name;
    }
    state.morphNames = names.filter((n) => n !== undefined);
    el('h2', { text: 'Expressions' }, panel);
    if (state.morphNames.length === 0) el('div', { text: 'no morph targets in this file' }, panel);
    state.morphNames.forEach((name, i) => {
      sliders[name] = slider(panel, `toon3d-morph-${i}`, name, 0, 1, 0.01, 0, (v) => {
        if (action && state.playing) pause();
        setMorph(name, v);
      });
    });

    if (gltf.animations.length > 0) {
      state.hasAnimation = true;
      const clip = gltf.animations[0];
      mixer = new THREE.AnimationMixer(gltf.scene);
      action = mixer.clipAction(clip);
      action.setLoop(THREE.LoopRepeat, Infinity);
      el('h2', { text: `Animation (${clip.duration.toFixed(1)} s)` }, panel);
      playButton = el('button', { id: 'toon3d-play', type: 'button', text: 'Play' }, panel);
      playButton.addEventListener('click', () => (state.playing ? pause() : play()));
    }

    el('h2', { text: 'Light' }, panel);
    slider(panel, 'toon3d-light-azimuth', 'direction: left ↔ right (°)', -180, 180, 1, light.azimuth,
      (v) => { light.azimuth = v; placeLight(); }, (v) => v.toFixed(0));
    slider(panel, 'toon3d-light-elevation', 'direction: below ↔ above (°)', -89, 89, 1, light.elevation,
      (v) => { light.elevation = v; placeLight(); }, (v) => v.toFixed(0));
    slider(panel, 'toon3d-light-ambient', 'ambient', 0, 3, 0.01, ambient.intensity, (v) => { ambient.intensity = v; });
    const reset = el('button', { id: 'toon3d-reset', type: 'button', text: 'Reset view' }, panel);
    reset.addEventListener('click', () => resetView());

    state.status = 'ready';
    document.body.dataset.status = 'ready';
    requestRedraw();
    setStatus(`${state.morphNames.length} expression${state.morphNames.length === 1 ? '' : 's'}`);
  };

  const glbNode = document.getElementById('toon3d-glb');
  if (!glbNode) { fail('this page carries no avatar (no <script id="toon3d-glb">)'); return; }
  let bytes;
  try {
    bytes = decodeBase64(glbNode.textContent);
  } catch (err) {
    fail(`the embedded avatar is not valid base64 (${err.message})`);
    return;
  }
  new GLTFLoader().parse(bytes.buffer, '', onLoad, (err) => fail(`cannot read the avatar: ${err.message || err}`));

  const tick = (timestamp) => {
    requestAnimationFrame(tick);
    timer.update(timestamp);
    const dt = timer.getDelta();
    if (mixer && state.playing) {
      mixer.update(dt);
      state.animationTime = action.time;
      const mesh = morphMeshes[0];
      for (const name of state.morphNames) {
        sliders[name]?.show(mesh.morphTargetInfluences[mesh.morphTargetDictionary[name]]);
      }
      dirty = true;
    }
    if (controls.update()) dirty = true;  // damping keeps moving after the drag ends
    if (!dirty) return;
    dirty = false;
    renderer.render(scene, camera);
    state.frame += 1;
  };
  requestAnimationFrame(tick);
}

window.addEventListener('error', (event) => fail(event.message || 'script error'));
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main);
else main();
