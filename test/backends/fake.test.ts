import { FakeBackend } from '../../src/backends/fake.js';
import { sharedBackendSuite } from './shared-suite.js';

sharedBackendSuite('fake', async () => {
  const backend = new FakeBackend({ seed: 42 });
  await backend.open();
  return {
    backend,
    async inject(f) {
      backend.inject(f);
    },
    async cleanup() {
      await backend.close();
    },
  };
});
