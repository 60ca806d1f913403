import { area } from './shapes.js';

const unit = { radius: 1 };
console.log(area(unit));
