/**
 * The plain manifests (deploy/manifests/, for users without Helm) are exactly what scripts/manifests.sh
 * generates from real Helm's default render (release and namespace `ferry`, Helm's own labels and hooks
 * dropped), parse, validate against the Kubernetes schemas of their kinds, and set every agent flag.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { agentOptions } from '../../packages/agent/src/config.ts';
import { MANIFEST_VALUES, manifestTexts, parseManifestText, type RenderedObject } from './helm.ts';
import {
  container,
  envOf,
  find,
  manifestsDir,
  type Obj,
  optionsNotInChart,
  podSpec,
  render,
  validateObject,
} from './k8s.ts';

function load(file: string): RenderedObject[] {
  return parseManifestText(readFileSync(`${manifestsDir}/${file}`, 'utf8'), `deploy/manifests/${file}`);
}

/** Drops what only Helm adds: its labels and hook annotations. */
function withoutHelm(obj: Obj): Obj {
  const o = structuredClone(obj);
  const meta = o.metadata as { labels?: Obj; annotations?: Obj };
  if (meta.labels) {
    delete meta.labels['helm.sh/chart'];
    delete meta.labels['app.kubernetes.io/managed-by'];
  }
  if (meta.annotations) {
    for (const k of Object.keys(meta.annotations)) if (k.startsWith('helm.sh/')) delete meta.annotations[k];
    if (Object.keys(meta.annotations).length === 0) delete meta.annotations;
  }
  return o;
}

const id = (o: Obj) => `${o.kind}/${(o.metadata as Obj).name}`;
const isHook = (o: Obj) => Boolean((o.metadata as { annotations?: Obj }).annotations?.['helm.sh/hook']);

describe('plain manifests', () => {
  const ferry = load('ferry.yaml');
  const cleanup = load('cleanup.yaml');
  const rendered = render({ values: MANIFEST_VALUES }).map((r) => r.obj);

  it('validate against the Kubernetes schemas', () => {
    for (const o of [...ferry, ...cleanup]) validateObject(o);
  });

  it('create the ferry namespace and put everything in it', () => {
    assert.equal(id(ferry[0]!.obj), 'Namespace/ferry');
    for (const o of [...ferry.slice(1), ...cleanup]) assert.equal((o.obj.metadata as Obj).namespace, 'ferry');
  });

  it('are what scripts/manifests.sh generates from the chart (run it after changing the chart)', () => {
    const want = manifestTexts();
    for (const file of ['ferry.yaml', 'cleanup.yaml'] as const)
      assert.equal(readFileSync(`${manifestsDir}/${file}`, 'utf8'), want[file], `deploy/manifests/${file}`);
  });

  it('equal the chart rendered with its default values (the network key Secret named, not generated)', () => {
    const chartObjs = rendered.filter((o) => !isHook(o)).map(withoutHelm);
    const plain = ferry.map((r) => r.obj).filter((o) => o.kind !== 'Namespace');
    assert.deepEqual(plain.map(id).sort(), chartObjs.map(id).sort());
    for (const o of plain)
      assert.deepEqual(
        o,
        chartObjs.find((c) => id(c) === id(o)),
        id(o),
      );
  });

  it('ship no network key: the agent mounts the Secret ferry-network-key the operator creates', () => {
    assert.ok(!ferry.some((r) => r.obj.kind === 'Secret'), 'a Secret in a public file is no secret');
    const ds = find(ferry, 'DaemonSet', 'ferry');
    const volume = (podSpec(ds).volumes as Obj[]).find((v) => v.name === 'network-key') as {
      secret: { secretName: string; optional?: boolean; items: { key: string }[] };
    };
    assert.equal(volume.secret.secretName, 'ferry-network-key');
    assert.notEqual(volume.secret.optional, true, 'a missing Secret must keep the pod from starting');
    assert.deepEqual(
      volume.secret.items.map((i) => i.key),
      ['network.key'],
    );
    assert.equal(
      envOf(container(ds, 'agent')).get('FERRY_NETWORK_KEY_FILE'),
      '/run/ferry/network-key/network.key',
    );
    // The header tells how to create it.
    assert.match(
      readFileSync(`${manifestsDir}/ferry.yaml`, 'utf8'),
      /create secret generic ferry-network-key/,
    );
  });

  it('cleanup.yaml is the chart’s post-delete DaemonSet', () => {
    assert.deepEqual(
      cleanup.map((r) => id(r.obj)),
      ['DaemonSet/ferry-cleanup'],
    );
    assert.deepEqual(cleanup[0]!.obj, withoutHelm(find(render(), 'DaemonSet', 'ferry-cleanup')));
  });

  it('set every agent flag by its environment variable (but those the chart leaves out)', () => {
    const env = envOf(container(find(ferry, 'DaemonSet', 'ferry'), 'agent'));
    for (const o of agentOptions) {
      if (o.name in optionsNotInChart)
        assert.equal(env.has(o.env), false, `${o.env}: ${optionsNotInChart[o.name]}`);
      else assert.ok(env.has(o.env), `${o.env} missing`);
    }
    // Besides the flags: the Node.js runtime's own settings (values.yaml `nodeOptions`, malloc arenas).
    const runtime = new Set(['NODE_OPTIONS', 'MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_']);
    for (const name of env.keys()) {
      if (runtime.has(name)) continue;
      assert.ok(
        agentOptions.some((o) => o.env === name),
        `${name} is no agent flag`,
      );
    }
  });
});
