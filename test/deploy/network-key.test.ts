/**
 * The cluster's network key in the chart, with real Helm: the chart generates a Secret holding one key
 * the agent's own parser accepts (a fresh one per install, never a constant), keeps it across upgrades
 * (`lookup` of the same Secret, its data taken over verbatim), or uses the Secret the user names; the
 * agent mounts it read-only and gets --network-key-file pointing into the mount; a missing Secret keeps
 * the pod from starting (the volume is not optional).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseNetworkKeys } from '../../packages/p2p/src/network-key.ts';
import { helmUpgradeRender, startApiServer } from './api-server.ts';
import { parseRendered } from './helm.ts';
import { chart, container, envOf, find, type Obj, podSpec, render } from './k8s.ts';

interface SecretVolume {
  name: string;
  secret?: {
    secretName: string;
    optional?: boolean;
    defaultMode?: number;
    items?: { key: string; path: string }[];
  };
}

function keyOf(objs: ReturnType<typeof render>, name: string): string {
  const secret = find(objs, 'Secret', name) as { data: Record<string, string> };
  return Buffer.from(secret.data['network.key']!, 'base64').toString('utf8');
}

/** The agent's key file: the Secret volume, its mount and FERRY_NETWORK_KEY_FILE, resolved. */
function keyMount(objs: ReturnType<typeof render>, fullname = 'ferry') {
  const ds = find(objs, 'DaemonSet', fullname);
  const agent = container(ds, 'agent');
  const file = envOf(agent).get('FERRY_NETWORK_KEY_FILE');
  assert.ok(file, 'FERRY_NETWORK_KEY_FILE is set');
  const mount = agent.volumeMounts?.find((m) => file.startsWith(`${m.mountPath}/`));
  assert.ok(mount, `no mount holds ${file}`);
  const volume = (podSpec(ds).volumes as SecretVolume[]).find((v) => v.name === mount.name);
  assert.ok(volume?.secret, `${file} is not on a Secret volume`);
  const path = file.slice(mount.mountPath.length + 1);
  const item = volume.secret.items?.find((i) => i.path === path);
  return { mount, secret: volume.secret, key: item?.key ?? path };
}

describe('network key in the chart', () => {
  it('is generated into a Secret with one key the agent parses, mounted read-only for --network-key-file', () => {
    const objs = render();
    const { mount, secret, key } = keyMount(objs);
    assert.equal(secret.secretName, 'ferry-network-key');
    assert.equal(key, 'network.key');
    assert.equal(mount.readOnly, true);
    assert.notEqual(secret.optional, true, 'a missing Secret must keep the pod from starting');
    assert.equal(secret.defaultMode, 0o400);
    const text = keyOf(objs, 'ferry-network-key');
    assert.match(text, /^[0-9a-f]{64}\n$/);
    assert.equal(parseNetworkKeys(text).length, 1);
  });

  it('is random per install (not a constant of the chart)', () => {
    const a = keyOf(render(), 'ferry-network-key');
    const b = keyOf(render(), 'ferry-network-key');
    assert.notEqual(a, b);
    assert.ok(!JSON.stringify(chart.values).includes(a.trim()));
  });

  it('follows the release name', () => {
    const objs = render({ releaseName: 'edge' });
    assert.equal(keyMount(objs, 'edge-ferry').secret.secretName, 'edge-ferry-network-key');
    keyOf(objs, 'edge-ferry-network-key');
  });

  it('is kept across upgrades: an upgrade renders the installed Secret’s keys verbatim (a rotation too)', async (t) => {
    // The installed Secret, mid-rotation: the new key first, the old one after it.
    const installed = `${'ab'.repeat(32)}\n${'cd'.repeat(32)}\n`;
    const api = await startApiServer({ ferry: { 'ferry-network-key': { 'network.key': installed } } });
    t.after(() => api.close());
    const objs = parseRendered(await helmUpgradeRender(api.kubeconfig));
    assert.equal(keyOf(objs, 'ferry-network-key'), installed);
    assert.ok(api.asked.includes('/api/v1/namespaces/ferry/secrets/ferry-network-key'));
    // Another namespace has no such Secret yet: a new key is generated there.
    const fresh = keyOf(parseRendered(await helmUpgradeRender(api.kubeconfig, 'other')), 'ferry-network-key');
    assert.match(fresh, /^[0-9a-f]{64}\n$/);
    assert.notEqual(fresh, installed);
  });

  it('comes from the Secret the user names, and the chart renders none', () => {
    const objs = render({ values: { ferry: { networkKeySecret: 'cluster-key' } } });
    assert.equal(keyMount(objs).secret.secretName, 'cluster-key');
    assert.ok(
      !objs.some(
        (o) => o.obj.kind === 'Secret' && /network-key/.test((o.obj.metadata as Obj).name as string),
      ),
    );
  });
});
