import { area } from './shapes';

const unit = { radius: 1 };
console.log(area(unit));
