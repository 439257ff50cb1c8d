import { describe, expect, it } from 'vitest';
import { faultClassOf, FAULT_CLASSES } from '../../src/events/fault-class.js';
import { gpuKey, gpuOrNodeKey, nodeKey, nodeKeyAtPci, nvswitchKey, parseFaultKey, pciKey, sxidKey, xidKey } from '../../src/events/fault-key.js';

describe('fault keys (src/events/fault-key.ts)', () => {
  it('builds each location in the documented form', () => {
    expect(gpuKey(3, 'xid', 79)).toBe('gpu3/xid/79');
    expect(gpuKey(0, 'thermal')).toBe('gpu0/thermal');
    expect(gpuKey(2, 'nvlink', 5, 'errors')).toBe('gpu2/nvlink/5/errors');
    expect(nodeKey('gpu_count')).toBe('node/gpu_count');
    expect(nodeKey('fabric_manager', 'log')).toBe('node/fabric_manager/log');
    expect(nvswitchKey(1, 'sxid', 12028)).toBe('nvswitch1/sxid/12028');
    expect(pciKey('0000:b3:00.0', 'gpu_lost')).toBe('pci/0000:b3:00.0/gpu_lost');
    expect(xidKey(4, 48)).toBe('gpu4/xid/48');
    expect(xidKey(-1, 48)).toBe('node/xid/48');
    expect(sxidKey(0, 20034)).toBe('nvswitch0/sxid/20034');
    expect(gpuOrNodeKey(-1, 'gsp')).toBe('node/gsp');
    expect(gpuOrNodeKey(7, 'gsp')).toBe('gpu7/gsp');
  });

  it('parses what it builds (location and path round trip)', () => {
    expect(parseFaultKey(gpuKey(12, 'clock', 'hw_slowdown'))).toEqual({ location: { kind: 'gpu', index: 12 }, path: 'clock/hw_slowdown' });
    expect(parseFaultKey(nvswitchKey(3, 'sxid', 12028))).toEqual({ location: { kind: 'nvswitch', index: 3 }, path: 'sxid/12028' });
    expect(parseFaultKey(pciKey('0000:b3:00.0', 'xid', 79))).toEqual({ location: { kind: 'pci', bus: '0000:b3:00.0' }, path: 'xid/79' });
    expect(parseFaultKey(nodeKey('kmsg_records_lost'))).toEqual({ location: { kind: 'node' }, path: 'kmsg_records_lost' });
    expect(parseFaultKey('something/else')).toEqual({ location: null, path: 'something/else' });
  });

  it('moves a node key to a PCI bus and leaves other keys alone', () => {
    expect(nodeKeyAtPci('node/xid/79', '0000:b3:00.0')).toBe('pci/0000:b3:00.0/xid/79');
    expect(nodeKeyAtPci('gpu1/xid/79', '0000:b3:00.0')).toBe('gpu1/xid/79');
  });

  it('round trip key -> class for every class, at every location', () => {
    for (const cls of Object.keys(FAULT_CLASSES)) {
      const parts = cls.split('/');
      // A numeric part (link, code) inside the path is not part of the class.
      const withNumber = cls === 'xid' || cls === 'sxid' ? [...parts, 79] : cls.startsWith('nvlink') ? [parts[0] as string, 5, ...parts.slice(1)] : parts;
      for (const key of [
        gpuKey(0, ...withNumber),
        gpuKey(17, ...withNumber),
        nodeKey(...withNumber),
        nvswitchKey(2, ...withNumber),
        pciKey('0000:b3:00.0', ...withNumber),
      ]) {
        expect(faultClassOf(key), key).toBe(cls);
      }
    }
  });
});
