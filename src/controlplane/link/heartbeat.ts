/**
 * One SendHeartbeat with the node's metrics (none when the provider fails or is slow). No
 * timestamp: the control plane's own clock decides liveness. NotFound means the control plane
 * forgot the node.
 */
import { Code, ConnectError } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import { HeartbeatRequestSchema } from '../../gen/navarch/control_plane_pb.js';
import { bounded } from '../../util/clock.js';
import { metricsToProto } from '../wire.js';
import { codeName, type LinkCore } from './core.js';

export async function sendHeartbeat(c: LinkCore): Promise<void> {
  if (!c.registered || !c.nodeId) return;
  let metrics;
  if (c.o.metrics) {
    try {
      metrics = metricsToProto(await bounded(c.clock, c.o.metrics(), c.providerTimeoutMs, 'metrics provider'));
    } catch (e) {
      c.log.warn({ err: (e as Error).message }, 'metrics unavailable; heartbeat without metrics');
    }
  }
  const req = create(HeartbeatRequestSchema, { nodeId: c.nodeId, metrics });
  try {
    await c.call('SendHeartbeat', (o) => c.o.client.rpc.sendHeartbeat(req, o));
    c.st.heartbeatsSent += 1;
  } catch (e) {
    const ce = ConnectError.from(e);
    c.noteConfigError(ce);
    if (ce.code === Code.NotFound) c.onForgotten('SendHeartbeat');
    else if (!c.abort.signal.aborted) c.log.warn({ code: codeName(ce.code), err: ce.rawMessage }, 'heartbeat failed');
  }
}
