import type { ViteUserConfig } from 'vitest/config';

/** Shared vitest settings (see vitest.shared.js). */
export declare function leanpassVitest(name: string): ViteUserConfig;
