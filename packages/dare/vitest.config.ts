import { leanpassVitest } from '../../vitest.shared.js';

export default leanpassVitest('dare');
