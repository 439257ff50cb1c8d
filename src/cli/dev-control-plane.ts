/** `navarch-agent control-plane --dev`: the development control plane until SIGINT/SIGTERM. */
import { startDevControlPlane } from '../devcp/dev-server.js';
import { loadPolicyFile, type HealthPolicy } from '../devcp/policy.js';
import type { CliIo } from './io.js';

export interface DevControlPlaneCliOptions {
  host: string;
  port: number;
  token: string | undefined;
  logLevel: string;
  io: CliIo;
  /** --health-policy FILE: a Navarch policy YAML instead of Navarch's default policy. */
  policyPath?: string;
}

export async function runDevControlPlane(opts: DevControlPlaneCliOptions): Promise<number> {
  let healthPolicy: HealthPolicy | undefined;
  if (opts.policyPath !== undefined) {
    try {
      healthPolicy = loadPolicyFile(opts.policyPath);
    } catch (err) {
      opts.io.stderr(`navarch-agent: control-plane: ${(err as Error).message}\n`);
      return 2;
    }
  }
  let cp;
  try {
    cp = await startDevControlPlane({
      host: opts.host,
      port: opts.port,
      ...(opts.token ? { authToken: opts.token } : {}),
      print: opts.logLevel !== 'silent',
      ...(healthPolicy ? { healthPolicy } : {}),
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    opts.io.stderr(`navarch-agent: control-plane: cannot listen on ${opts.host}:${opts.port}: ${e.code === 'EADDRINUSE' ? 'address in use' : e.message}\n`);
    return 1;
  }
  opts.io.stdout(`dev control plane listening on ${cp.url}${opts.token ? ' (bearer token required)' : ''}\n`);
  await new Promise<void>((resolve) => {
    const done = (): void => resolve();
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  await cp.close();
  return 0;
}
